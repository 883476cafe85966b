"""`patio verify` and `patio verify-consistency`: every tamper named, every bad input exit 2."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.bundle import Anchor
from ledger.cli import main
from ledger.keys import NamedKey
from ledger.log import Log
from tests.ledger.helpers import submission

Bundle = dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sealed log with 11 entries, a bundle for entry 6, and two checkpoints."""
    folder = tmp_path_factory.mktemp("verify")
    log_key = NamedKey.generate("example.org/patio-verify")
    device = NamedKey.generate("meter-7")
    log = Log.open(url=f"sqlite:///{folder}/ledger.sqlite3", signer=log_key)
    log.append([submission(device, i) for i in range(5)])
    old = log.seal()
    log.append([submission(device, i) for i in range(5, 11)])
    new = log.seal()
    tag = log.entry(6).log_tag_id
    bundle = log.bundle(tag, device_key=device.public_key_b64).to_json()
    (folder / "old.note").write_text(old.note)
    (folder / "new.note").write_text(new.note)
    proof = {"hashes": [h.hex() for h in log.consistency_proof(old.tree_size, new.tree_size)]}
    (folder / "consistency.json").write_text(json.dumps(proof))
    return {"folder": folder, "log_key": log_key, "bundle": bundle, "log": log, "old": old}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def check(
    world: dict[str, Any], bundle: Any, capsys: pytest.CaptureFixture[str], raw: str | None = None
) -> tuple[int, str]:
    path = world["folder"] / "candidate.json"
    path.write_text(raw if raw is not None else json.dumps(bundle))
    code, _, err = run(["verify", str(path), "--log-key", world["log_key"].verifier_key], capsys)
    return code, err


def test_a_good_bundle_verifies(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(world, world["bundle"], capsys)
    assert code == 0, err
    assert err == ""


def test_without_a_pinned_key_it_warns(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = world["folder"] / "unpinned.json"
    path.write_text(json.dumps(world["bundle"]))
    code, out, err = run(["verify", str(path)], capsys)
    assert code == 0 and out.startswith("OK: entry c274b5")
    assert "warning: log key not pinned" in err


def flip_hex(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def set_path(bundle: Bundle, path: str, change: Callable[[Any], Any]) -> Bundle:
    tampered = copy.deepcopy(bundle)
    *parents, last = path.split(".")
    target: Any = tampered
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    target[key] = change(target[key])
    return tampered


def other_signature() -> str:
    return NamedKey.generate("x").sign_payload({"a": 1})


def forge_checkpoint(note: str, line: int, value: str) -> str:
    lines = note.split("\n")
    lines[line] = value
    return "\n".join(lines)


TAMPERS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("log_tag_id", flip_hex, "log tag"),
    ("leaf_index", lambda i: i + 1, "inclusion"),
    ("leaf_index", lambda i: i - 1, "inclusion"),
    ("entry.v", lambda v: 2, "entry hash"),
    ("entry.contract", lambda c: "energy_minute@2", "entry hash"),
    ("entry.received_at", lambda t: "2030-01-01T00:00:00.000Z", "entry hash"),
    ("entry.sig", lambda s: other_signature(), "entry hash"),
    ("entry.payload.seq", lambda s: s + 1, "entry hash"),
    ("entry.payload.readings.t1.avg", lambda a: a + 0.5, "entry hash"),
    ("inclusion.tree_size", lambda n: n + 1, "inclusion"),
    ("inclusion.hashes.0", flip_hex, "inclusion"),
    ("inclusion.hashes", lambda h: h[:-1], "inclusion"),
    ("checkpoint", lambda n: forge_checkpoint(n, 1, "12"), "checkpoint signature"),
    ("checkpoint", lambda n: forge_checkpoint(n, 0, "evil.example/log"), "checkpoint signature"),
    ("checkpoint", lambda n: forge_checkpoint(n, 2, "A" * 43 + "="), "checkpoint signature"),
    ("log_key", lambda k: NamedKey.generate("example.org/patio-verify").verifier_key, "log key"),
    ("device_key", lambda k: NamedKey.generate("meter-7").public_key_b64, "device signature"),
]


@pytest.mark.parametrize(("path", "change", "check_name"), TAMPERS)
def test_every_tamper_is_named(
    world: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    path: str,
    change: Callable[[Any], Any],
    check_name: str,
) -> None:
    code, err = check(world, set_path(world["bundle"], path, change), capsys)
    assert code == 1, err
    assert f"FAILED {check_name}:" in err
    assert "Traceback" not in err


def test_a_forged_checkpoint_signature_is_refused(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    impostor = NamedKey.generate("example.org/patio-verify")
    body = world["bundle"]["checkpoint"].split("\n\n")[0] + "\n"
    from ledger.note import sign_note

    code, err = check(world, {**world["bundle"], "checkpoint": sign_note(body, impostor)}, capsys)
    assert code == 1 and "FAILED checkpoint signature: no signature by log key" in err


def test_an_anchor_that_is_not_an_ancestor_is_refused(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log: Log = world["log"]
    old = world["old"]
    good = Anchor(
        chain_id=1,
        tx_hash="0x" + "ab" * 32,
        block_number=7,
        contract=None,
        tree_size=old.tree_size,
        root=old.root_hash,
        consistency=log.consistency_proof(old.tree_size, 11),
    )
    bundle = {**world["bundle"], "anchors": [good.to_json()]}
    assert check(world, bundle, capsys)[0] == 0
    forged = {**good.to_json(), "root": "11" * 32}
    code, err = check(world, {**world["bundle"], "anchors": [forged]}, capsys)
    assert code == 1 and "FAILED anchor: anchors[0]" in err


MALFORMED: list[tuple[str, str]] = [
    ("not json", "{"),
    ("empty", ""),
    ("a list", "[]"),
    ("duplicate keys", '{"format": "patio-proof/v1", "format": "x"}'),
]


@pytest.mark.parametrize(("name", "raw"), MALFORMED)
def test_unusable_files_exit_2(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], name: str, raw: str
) -> None:
    code, err = check(world, None, capsys, raw=raw)
    assert code == 2, name
    assert err.startswith("patio: unusable input:") and err.count("\n") == 1


FIELD_DAMAGE: list[tuple[str, Callable[[Any], Any]]] = [
    ("format", lambda f: "patio-proof/v2"),
    ("leaf_index", lambda i: "6"),
    ("leaf_index", lambda i: -1),
    ("log_tag_id", lambda t: t[:-2]),
    ("log_tag_id", lambda t: t.upper()),
    ("inclusion.hashes.0", lambda h: "zz" + h[2:]),
    ("inclusion.hashes.0", lambda h: h[:-2]),
    ("inclusion.tree_size", lambda n: None),
    ("entry", lambda e: "entry"),
    ("entry.payload", lambda p: [p]),
    ("checkpoint", lambda n: n.split("\n\n")[0]),
    ("checkpoint", lambda n: 5),
    ("log_key", lambda k: "not-a-key"),
    ("device_key", lambda k: "!!!notbase64"),
    ("device_key", lambda k: "AAAA"),
    ("anchors", lambda a: {"chain_id": 1}),
]


@pytest.mark.parametrize(("path", "change"), FIELD_DAMAGE)
def test_unusable_fields_exit_2(
    world: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    path: str,
    change: Callable[[Any], Any],
) -> None:
    code, err = check(world, set_path(world["bundle"], path, change), capsys)
    assert code == 2, err
    assert err.startswith("patio: unusable input:") and "Traceback" not in err


@pytest.mark.parametrize(
    "field",
    [
        "format",
        "entry",
        "inclusion",
        "checkpoint",
        "log_key",
        "device_key",
        "log_tag_id",
        "leaf_index",
    ],
)
def test_missing_fields_exit_2(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], field: str
) -> None:
    bundle = {k: v for k, v in world["bundle"].items() if k != field}
    assert check(world, bundle, capsys)[0] == 2


def test_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["verify", "/nonexistent/bundle.json"], capsys)
    assert code == 2 and "cannot read bundle" in err


def test_consistency_between_checkpoints(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    folder: Path = world["folder"]
    key = world["log_key"].verifier_key
    args = [str(folder / n) for n in ("old.note", "new.note", "consistency.json")]
    code, out, _ = run(["verify-consistency", *args, "--log-key", key], capsys)
    assert code == 0 and "at size 11 extends size 5" in out
    swapped = [args[1], args[0], args[2]]
    code, _, err = run(["verify-consistency", *swapped, "--log-key", key], capsys)
    assert code == 1 and "FAILED consistency" in err
    proof = json.loads((folder / "consistency.json").read_text())
    (folder / "bad.json").write_text(json.dumps({"hashes": [flip_hex(proof["hashes"][0])]}))
    code, _, err = run(
        ["verify-consistency", args[0], args[1], str(folder / "bad.json"), "--log-key", key], capsys
    )
    assert code == 1 and "FAILED consistency" in err
    (folder / "junk.json").write_text('{"hashes": "nope"}')
    code, _, err = run(
        ["verify-consistency", args[0], args[1], str(folder / "junk.json"), "--log-key", key],
        capsys,
    )
    assert code == 2
    other = NamedKey.generate("example.org/patio-verify").verifier_key
    code, _, err = run(["verify-consistency", *args, "--log-key", other], capsys)
    assert code == 1 and "FAILED checkpoint signature" in err


def test_the_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed `patio` command: init, keygen, append, seal, proof, verify, tamper."""
    patio = [sys.executable, "-m", "ledger.cli"]

    def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*patio, *args], capture_output=True, text=True, check=check, cwd=tmp_path
        )

    log_key = sh("log", "init", "--dir", "data", "--origin", "hoa.example/log").stdout.strip()
    assert log_key.startswith("hoa.example/log+")
    public = sh("keygen", "--name", "dev-1", "--out", "dev.key").stdout.strip()
    assert (tmp_path / "dev.key").stat().st_mode & 0o777 == 0o600
    refused = sh("keygen", "--name", "dev-1", "--out", "dev.key", check=False)
    assert refused.returncode == 2 and "refusing to overwrite" in refused.stderr
    device = NamedKey.load(tmp_path / "dev.key")
    lines = [
        json.dumps({"payload": p, "sig": device.sign_payload(p)})
        for p in ({"device_id": "dev-1", "seq": i, "w": i} for i in range(3))
    ]
    lines.append('{"payload": {"device_id": "dev-1", "seq": 9}, "sig": "AAAA"}')
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    appended = sh(
        "log",
        "append",
        "--dir",
        "data",
        "--contract",
        "demo@1",
        "--device-key",
        public,
        "in.jsonl",
        check=False,
    )
    assert appended.returncode == 1 and "line 4 refused" in appended.stderr
    tags = appended.stdout.split()
    assert len(tags) == 3
    assert sh("log", "seal", "--dir", "data").stdout.startswith("hoa.example/log\n3\n")
    sh("log", "proof", "--dir", "data", tags[1], "--device-key", public, "--out", "b.json")
    ok = sh("verify", "b.json", "--log-key", log_key)
    assert ok.stdout.startswith(f"OK: entry {tags[1]} is leaf 1")
    bundle = json.loads((tmp_path / "b.json").read_text())
    bundle["entry"]["payload"]["w"] = 99
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    bad = sh("verify", "b.json", "--log-key", log_key, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("patio: FAILED entry hash")
