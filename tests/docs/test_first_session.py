"""The README's first session and the edge quick start, run verbatim on a fresh clone."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.clock import ScaledClock
from tests.docs.fenced import (
    REPO,
    bash,
    free_port,
    fresh_clone,
    processes_in,
    session,
    session_env,
    unmarked_shell_blocks,
    untracked,
    wait_until_none_in,
)
from tests.gateway.server import start_gateway

SESSION_TIMEOUT = 600  # a limit for a hung session, not a speed expectation
PATIO = Path(sys.executable).parent / "patio"


@pytest.mark.parametrize("doc", ["README.md", "edge/README.md", *(
    str(p.relative_to(REPO)) for p in sorted((REPO / "docs").glob("*.md")))])  # fmt: skip
def test_every_shell_block_of_the_docs_is_run_by_a_test(doc: str) -> None:
    assert unmarked_shell_blocks(REPO / doc) == []


def test_no_doc_points_outside_the_repository() -> None:
    for doc in [REPO / "README.md", REPO / "edge" / "README.md", *(REPO / "docs").glob("*.md")]:
        assert "../shared" not in doc.read_text(), doc


def test_the_first_session_and_the_edge_quick_start_as_pasted(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "patio")
    script = (
        session(REPO / "README.md", "first-session")
        + session(REPO / "edge" / "README.md", "edge-quick-start")
        + session(REPO / "README.md", "stop")
    )
    with bash(script, cwd=clone, env=session_env(PORT=str(free_port()))) as shell:
        out, err = shell.communicate(timeout=SESSION_TIMEOUT)
    assert shell.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert '"status": "accepted"' in out
    assert "OK: entry c274b5" in out and "is leaf 2 of patio-ledger.local/log" in out
    # The agent replayed simulated minutes up to now, none of them in the future.
    assert "outbox empty" in out and "dead letters: 0" in out and "pending: 0" in out
    assert '"device_id":"boiler-room-1"' in out
    assert "Traceback" not in err
    # `kill %1` of make (serve) stopped the gateway and its writer.
    assert wait_until_none_in(clone) == []
    # The keys and the database are the operator's only, and git ignores all of it.
    var = clone / "var"
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    for name in ("ledger.sqlite3", "log.key", "registry.key", "boiler-1.key", "edge/device.key"):
        assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name
    assert untracked(clone) == []


def test_the_database_and_its_wal_are_created_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    os.umask(0o022)  # the usual umask: without the fix, files come out 0644
    subprocess.run([PATIO, "log", "init", "--dir", str(data)], check=True, capture_output=True)
    from ledger.log import open_data_dir

    log = open_data_dir(data)
    try:
        with log.engine.connect() as conn:  # WAL and SHM exist while a connection is open
            conn.exec_driver_sql("SELECT 1")
            files = sorted(p.name for p in data.iterdir())
            assert {"ledger.sqlite3-wal", "ledger.sqlite3-shm"} <= set(files)
            modes = {name: stat.S_IMODE((data / name).stat().st_mode) for name in files}
    finally:
        log.engine.dispose()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert modes == dict.fromkeys(files, 0o600)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["keygen", "--name", "dev-1", "--out", "k"], 141),
        (["edge", "status", "--config", "e"], 141),
        (["--help"], 0),  # argparse itself ignores a failed write of its help
    ],
)
def test_a_reader_that_goes_away_is_no_traceback(
    tmp_path: Path, args: list[str], code: int
) -> None:
    """`patio ... | head`: the reader closed the pipe before patio wrote to it."""
    (tmp_path / "e").write_text(
        'device_id = "d"\ncommunity = "c"\nkey_file = "k2"\n[delivery]\nurl = "http://x"\n'
        '[[sensor]]\ndriver = "simulator"\nname = "s"\nkind = "solar"\n'
    )
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as stdout:
        done = subprocess.run(
            [PATIO, *args], cwd=tmp_path, stdout=stdout, stderr=subprocess.PIPE, text=True
        )
    assert done.stderr.count("\n") <= 1 and "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr
    assert done.returncode == code


def test_the_writer_exits_when_the_gateway_is_killed(tmp_path: Path) -> None:
    """A `kill -9` of the HTTP process leaves no writer behind: it sees the hang-up."""
    gateway = start_gateway(tmp_path)
    try:
        pid = gateway.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        writers = [int(c) for c in children if b"gateway.writer" in _cmdline(int(c))]
        assert len(writers) == 1
        writer = os.pidfd_open(writers[0])
        gateway.process.kill()
        gateway.process.wait()
        readable, _, _ = select.select([writer], [], [], 30)
        os.close(writer)
        assert readable, "the writer outlived its gateway"
    finally:
        gateway.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_demo_clock_back_fills_and_never_runs_ahead() -> None:
    real = time.time()
    # Anchored a second ago 10 s in the past: at full speed it would be 590 s ahead by now.
    clock = ScaledClock(start=real - 10, anchor=real - 1, scale=600)
    assert real <= clock.now() <= time.time()
    behind = ScaledClock(start=real - 86_400, anchor=real, scale=600)
    assert real - 86_400 <= behind.now() < real - 86_000


def test_ctrl_c_stops_make_serve_gateway_and_writer(tmp_path: Path) -> None:
    """Ctrl-C at a terminal: SIGINT to make's whole process group."""
    clone = fresh_clone(tmp_path / "patio")
    port = free_port()
    script = (
        "make serve &\n"
        f"curl -sS --retry 30 --retry-delay 1 --retry-connrefused -o /dev/null "
        f"http://127.0.0.1:{port}/readyz\n"
        "echo ready\n"
        "wait\n"
    )
    with bash(script, cwd=clone, env=session_env(PORT=str(port))) as shell:
        assert shell.stdout is not None
        for line in shell.stdout:
            if line.strip() == "ready":
                break
        assert len(processes_in(clone)) >= 4  # bash, make, the gateway, its writer
        gateway = [p for p in processes_in(clone) if b"gateway\x00serve" in _cmdline(p)]
        assert len(gateway) == 1
        os.killpg(os.getpgid(gateway[0]), signal.SIGINT)
        shell.wait(timeout=SESSION_TIMEOUT)
    assert wait_until_none_in(clone) == []
