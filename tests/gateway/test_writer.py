"""The gateway's two processes: a writer crash loses nothing accepted, is answered 503 and is
recovered; a stop ends both, open event streams or not."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.gateway.server import Gateway, start_gateway
from tests.gateway.test_api import envelope, is_problem, minute, submit


def writer_pid(server: Gateway) -> int:
    """The gateway's one child process: its writer."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_writer_crash_is_recovered_and_loses_nothing(tmp_path: Path) -> None:
    server = start_gateway(tmp_path)
    try:
        key = server.device("meter-1", "hoa-1")
        first = [envelope(key, minute(key.name, seq)) for seq in (1, 2, 3)]
        accepted = submit(server, *first)
        assert [r["status"] for r in accepted] == ["accepted"] * 3
        crashed = writer_pid(server)
        # Ctrl-C and systemd's stop reach the whole group: the writer waits for its parent.
        os.kill(crashed, signal.SIGINT)
        os.kill(crashed, signal.SIGTERM)
        assert submit(server, envelope(key, minute(key.name, 5)))[0]["status"] == "accepted"
        assert writer_pid(server) == crashed
        os.kill(crashed, signal.SIGKILL)

        later = envelope(key, minute(key.name, 4))
        deadline = time.monotonic() + 20
        while True:
            reply = server.client().post(
                "/v1/entries", json={"contract": "energy_minute", "envelopes": [later]}
            )
            if reply.status_code == 200:
                break
            # While the writer restarts: a 503 problem that says to retry, never a 500.
            assert is_problem(reply, 503) and reply.headers["Retry-After"] == "1", reply.text
            assert time.monotonic() < deadline, "the writer did not come back"
            time.sleep(0.1)
        assert reply.json()["results"][0]["status"] == "accepted"
        assert writer_pid(server) != crashed

        again = submit(server, *first)  # what was accepted before the crash is still there
        assert [r["status"] for r in again] == ["duplicate"] * 3
        assert [r["log_tag_id"] for r in again] == [r["log_tag_id"] for r in accepted]
        log = (tmp_path / f"gateway-{server.url.rsplit(':', 1)[1]}.log").read_text()
        assert "the writer exited" in log
    finally:
        restarted = writer_pid(server)
        server.stop()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{restarted}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{restarted}").exists(), "the writer outlived its gateway"


def test_a_stop_is_not_held_up_by_an_open_event_stream(tmp_path: Path) -> None:
    import threading

    import httpx

    from gateway.cli import SHUTDOWN_GRACE

    server = start_gateway(tmp_path)
    key = server.admin.post("/v1/apps", json={"name": "a", "scopes": ["audit"]}).json()
    ended = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Bearer {key['api_key']}"}
        try:
            with httpx.stream(
                "GET", f"{server.url}/v1/stream", headers=headers, timeout=60
            ) as reply:
                for _ in reply.iter_lines():
                    pass
        except httpx.HTTPError:
            pass
        ended.set()

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(0.5)  # the stream is open
    writer = writer_pid(server)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=SHUTDOWN_GRACE + 5)
    finally:
        server.stop()
    assert time.monotonic() - started < SHUTDOWN_GRACE + 5
    assert ended.wait(5), "the stream was not closed"
    assert not Path(f"/proc/{writer}").exists(), "the writer outlived its gateway"
