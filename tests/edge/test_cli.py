"""`patio edge`: keygen, one-line config errors with exit 2, status, flush and requeue."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.agent import Agent
from ledger.cli import main
from ledger.keys import NamedKey
from tests.edge.conftest import DEVICE, T0, ConfigFactory
from tests.edge.fakes import FakeGateway, ManualClock

Capture = pytest.CaptureFixture[str]
HEAD = 'device_id = "d"\ncommunity = "c"\nkey_file = "k"\n'
URL = '[delivery]\nurl = "http://127.0.0.1:9"\n'


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    """Run `patio ...` in-process; exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_a_private_key_file_and_prints_the_public_key(
    tmp_path: Path, capsys: Capture
) -> None:
    path = tmp_path / "boiler.key"
    code, out, err = run(capsys, "edge", "keygen", "--out", str(path), "--device-id", "boiler-1")
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = NamedKey.load(path)
    assert out.strip().splitlines()[-1] == key.public_key_b64 and key.name == "boiler-1"
    assert '"id": "boiler-1"' in err
    code, out, err = run(capsys, "edge", "keygen", "--out", str(path), "--device-id", "boiler-1")
    assert code == 2 and err.count("\n") == 1 and "refusing to overwrite" in err


def test_keygen_refuses_a_bad_device_id(tmp_path: Path, capsys: Capture) -> None:
    code, _, err = run(capsys, "edge", "keygen", "--out", str(tmp_path / "k"), "--device-id", "a b")
    assert code == 2 and err.startswith("patio: device id must match")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "configuration file {path} does not exist"),
        ("device_id = \n", "is not valid TOML"),
        ('community = "hoa-1"\nkey_file = "k"\n', "edge.toml: 'device_id' is required"),
        ('device_id = "dev 1"\n', "edge.toml: 'device_id' must match"),
        (
            HEAD
            + "colour = 1\n"
            + URL
            + '[[sensor]]\ndriver = "simulator"\nname = "s"\nkind = "solar"\n',
            "edge.toml: unknown key 'colour'",
        ),
        (
            HEAD + URL + "batch_size = 5000\n"
            '[[sensor]]\ndriver = "simulator"\nname = "s"\nkind = "solar"\n',
            "[delivery]: 'batch_size' must be from 1 to 1000, not 5000",
        ),
        (
            HEAD + URL + '[[sensor]]\ndriver = "simulator"\nname = "s"\nkind = "wind"\n',
            "sensor 's': 'kind' must be one of solar, household, boiler, grid, not 'wind'",
        ),
        (
            HEAD + URL + "[agent]\ntime_scale = 60\n"
            '[[sensor]]\ndriver = "ds18b20"\nname = "t"\nsensor_id = "000005e2fdc3"\n',
            "[agent]: time_scale and sim_start need simulator sensors only",
        ),
        (
            HEAD + URL + '[[sensor]]\ndriver = "simulator"\nname = "a"\nkind = "solar"\n'
            '[[sensor]]\ndriver = "simulator"\nname = "a"\nkind = "solar"\n',
            "sensor 'a': reading 'a_w' is duplicated",
        ),
        (HEAD + URL, "at least one [[sensor]]"),
        (
            HEAD + '[delivery]\ntransport = "legacy"\n',
            "[delivery]: 'url' is required for the legacy",
        ),
    ],
    ids=[
        "missing",
        "syntax",
        "required",
        "pattern",
        "unknown-key",
        "range",
        "choice",
        "scale-with-hardware",
        "duplicate-reading",
        "no-sensor",
        "no-url",
    ],
)
def test_config_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: Capture, text: str | None, message: str
) -> None:
    path = tmp_path / "edge.toml"
    if text is not None:
        path.write_text(text)
    for action in ("run", "status", "flush"):
        code, _out, err = run(capsys, "edge", action, "--config", str(path))
        assert code == 2
        assert err.count("\n") == 1 and err.startswith("patio: ")
        assert message.format(path=path) in err


def test_a_key_file_open_to_others_is_refused(
    write_config: Callable[..., Path], capsys: Capture, tmp_path: Path
) -> None:
    path = write_config()
    os.chmod(tmp_path / "dev.key", 0o644)
    code, _, err = run(capsys, "edge", "run", "--config", str(path))
    assert code == 2 and "is open to others (mode 0644); chmod 600 it" in err


def test_a_missing_key_file_says_how_to_make_one(
    write_config: Callable[..., Path], capsys: Capture, tmp_path: Path
) -> None:
    path = write_config()
    (tmp_path / "dev.key").unlink()
    code, _, err = run(capsys, "edge", "flush", "--config", str(path))
    assert code == 2 and "create it with `patio edge keygen`" in err


def test_status_flush_and_requeue(
    write_config: Callable[..., Path],
    make_config: ConfigFactory,
    gateway: FakeGateway,
    clock: ManualClock,
    capsys: Capture,
) -> None:
    path = write_config(agent={"grace_s": 1.0}, delivery={"url": gateway.url})
    code, out, _ = run(capsys, "edge", "status", "--config", str(path))
    assert (code, out) == (0, f"{DEVICE}: no database yet\n")

    gateway.down = True  # the agent aggregates three minutes it cannot deliver
    agent = Agent(
        config=make_config(agent={"grace_s": 1.0}, delivery={"url": gateway.url}), clock=clock
    )
    while clock.t < T0 + 3 * 60 + 2:
        agent.step(clock.t)
        clock.t += 1
    agent.close()
    code, out, _ = run(capsys, "edge", "status", "--config", str(path), "--json")
    status = json.loads(out)
    assert code == 0
    assert (status["pending"], status["dead"], status["next_seq"]) == ({"energy_minute": 3}, 0, 4)

    code, out, _ = run(capsys, "edge", "flush", "--config", str(path))
    assert code == 1 and "stopped: HTTP 503: gateway is down" in out

    gateway.down, gateway.reject_seqs = False, {2}
    code, out, _ = run(capsys, "edge", "flush", "--config", str(path))
    assert (code, out) == (1, "delivered 2, dead-lettered 1; outbox empty\n")
    code, out, _ = run(capsys, "edge", "status", "--config", str(path))
    assert code == 1  # dead letters need attention
    assert "dead letters: 1" in out
    assert "dead seq 2 (2026-11-22T10:01:00Z): refused by the test" in out

    gateway.reject_seqs = set()
    assert run(capsys, "edge", "requeue", "--config", str(path))[1] == "requeued 1 dead letters\n"
    code, out, _ = run(capsys, "edge", "flush", "--config", str(path))
    assert (code, out) == (0, "delivered 1, dead-lettered 0; outbox empty\n")
    assert sorted(seq for _, seq in gateway.entries) == [1, 2, 3]
    code, out, _ = run(capsys, "edge", "status", "--config", str(path))
    assert code == 0 and "pending: 0" in out and "acknowledged (kept): 3" in out


def test_one_agent_per_data_folder(
    make_config: ConfigFactory, write_config: Callable[..., Path], capsys: Capture
) -> None:
    path = write_config()
    agent = Agent(config=make_config(), clock=ManualClock(T0))
    try:
        code, _, err = run(capsys, "edge", "flush", "--config", str(path))
        assert code == 1 and "another agent is using" in err
    finally:
        agent.close()


def test_the_example_config_is_valid_as_shipped_and_on_a_pi(tmp_path: Path) -> None:
    from edge.config import load_config
    from tests.edge.fakes import REPO

    text = (REPO / "edge" / "edge.example.toml").read_text()
    config = load_config(REPO / "edge" / "edge.example.toml")
    assert config.device_id == "boiler-room-1" and config.delivery.transport == "http"
    assert config.agent.time_scale == 600 and {s.driver for s in config.sensors} == {"simulator"}
    assert str(config.database) == "/var/lib/patio-edge/edge.db"
    # What its comments tell a Pi owner to do: drop the demo clock and the simulators,
    # uncomment the real sensors.
    head, pi = text.split("# On a Raspberry Pi", 1)
    head = head[: head.index("# Simulated sensors")].replace("time_scale = 600\n", "")
    real = "\n".join(line.removeprefix("#").removeprefix(" ") for line in pi.splitlines()[1:])
    (tmp_path / "edge.toml").write_text(head + real + "\n")
    config = load_config(tmp_path / "edge.toml")
    assert config.agent.time_scale == 1
    channels = [c.name for spec in config.sensors for c in spec.channels]
    assert channels == ["water", "flue", "fan_va", "fan_on", "heatpump_w", "heatpump_wh"]
