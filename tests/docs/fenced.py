"""The shell blocks of the project's Markdown, as the tests under tests/docs run them.

A fenced block preceded by `<!-- test: NAME -->` belongs to the session NAME; a session is
its blocks in document order, run verbatim by bash. No shell block goes unmarked.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARK = re.compile(r"^<!-- test: ([a-z0-9-]+) -->$")
FENCE = re.compile(r"^```(\w*)$")
SHELL = {"sh", "bash", "shell", "console"}


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its text, the session it is marked for."""

    language: str
    text: str
    session: str | None
    line: int


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    session: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if mark := MARK.match(line):
            session = mark.group(1)
        elif fence := FENCE.match(line):
            end = lines.index("```", index + 1)
            text = "\n".join(lines[index + 1 : end]) + "\n"
            found.append(Block(fence.group(1), text, session, index + 1))
            session, index = None, end
        elif line.strip():
            session = None  # a mark binds only the fence right after it
        index += 1
    return found


def session(path: Path, name: str) -> str:
    """The session's blocks of one file, joined; fails if the file has none."""
    texts = [b.text for b in blocks(path) if b.session == name]
    assert texts, f"{path.relative_to(REPO)} has no block marked <!-- test: {name} -->"
    return "".join(texts)


def unmarked_shell_blocks(path: Path) -> list[int]:
    """Lines of shell blocks that no test runs."""
    return [b.line for b in blocks(path) if b.language in SHELL and b.session is None]


def free_port() -> int:
    """A TCP port nothing listens on now (the docs use ${PORT:-8000})."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_clone(destination: Path) -> Path:
    """The repository's tracked files as they are in the worktree, in a git repository of
    their own (so `git status` shows what a session leaves behind), sharing `.venv`."""
    stamp, project = REPO / ".venv" / ".installed", REPO / "pyproject.toml"
    if not stamp.exists() or stamp.stat().st_mtime < project.stat().st_mtime:
        # The clone's `make install` would reinstall the shared .venv editable from the
        # clone, a temporary folder: every later `patio` would fail to import.
        raise RuntimeError("pyproject.toml changed since `make install`: run it first")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / ".venv").symlink_to(REPO / ".venv")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=destination, check=True)
    (destination / ".git" / "info" / "exclude").write_text(".venv\n")  # a symlink, not the dir
    subprocess.run([*git, "add", "-A"], cwd=destination, check=True)
    return destination


def untracked(clone: Path) -> list[str]:
    """Files a session wrote that git would offer to commit."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=clone, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line[3:] for line in status.splitlines() if line.startswith("??")]


def session_env(**extra: str) -> dict[str, str]:
    """The caller's environment without the gateway's settings: the embedded defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATIO_")}
    env.update(extra)
    return env


@contextmanager
def bash(script: str, *, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """bash running `script` (set -e: the first failing command ends it) in a process
    group of its own, killed with everything it started when the test is done."""
    process = subprocess.Popen(
        ["bash", "-c", "set -eo pipefail\n" + script],
        cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is `folder` (a gateway or writer left running)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until_none_in(folder: Path, timeout: float = 30.0) -> list[int]:
    """Wait for every process working in `folder` to exit (on its pidfd, which becomes
    readable when it does); those still there at the end."""
    deadline = time.monotonic() + timeout
    for pid in processes_in(folder):
        with suppress(ProcessLookupError):
            fd = os.pidfd_open(pid)
            try:
                select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            finally:
                os.close(fd)
    return processes_in(folder)
