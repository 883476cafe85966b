"""The gateway's two processes: a writer crash loses nothing accepted, is answered 503 and is
recovered; a stop ends both, open event streams or not."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.server import Gateway, start_gateway
from tests.gateway.test_api import envelope, is_problem, minute, submit
from tests.wait import process_gone, wait_until


def writer_pid(server: Gateway) -> int:
    """The gateway's one child process: its writer."""
    return server.writer_pid()


@pytest.fixture
def own_gateway(database_url: str, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway of this test's own, on a fresh SQLite file, then a fresh PostgreSQL schema."""
    server = start_gateway(tmp_path, database_url=database_url)
    try:
        yield server
    finally:
        server.stop()


Key = tuple[str, int]  # (device id, seq)


class Hammer:
    """Submitters that keep sending batches of three and record every answer.

    A 200 acknowledges its envelopes (their log tag ids are kept); a 503 must be a problem
    with Retry-After, and its envelopes are sent again later; anything else, or no answer
    within 30 s, is a failure.
    """

    def __init__(self, server: Gateway, devices: int) -> None:
        self.server = server
        self.keys = [server.device(f"meter-{i}", "hoa-1") for i in range(devices)]
        self.sent: dict[Key, dict[str, Any]] = {}
        self.acked: dict[Key, str] = {}
        self.refused: list[str] = []  # the detail of each 503
        self.failures: list[str] = []
        self.progress = threading.Condition()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in self.keys]

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def wait_for_acks(self, count: int, what: str) -> None:
        """Until `count` envelopes are acknowledged in all."""
        with self.progress:
            done = self.progress.wait_for(
                lambda: len(self.acked) >= count or bool(self.failures), 60
            )
        assert done and not self.failures, f"{what}: {self.failures or 'timed out'}"

    def _run(self, key: Any) -> None:
        try:
            self._submit_until_stopped(key)
        except Exception as exc:  # the test fails on it, not a thread that dies unseen
            self._fail(f"{type(exc).__name__}: {exc}")

    def _submit_until_stopped(self, key: Any) -> None:
        next_seq = 1
        retry: list[dict[str, Any]] = []
        with self.server.client() as client:
            while not self.stop.is_set():
                batch = retry or [envelope(key, minute(key.name, next_seq + k)) for k in range(3)]
                if not retry:
                    next_seq += 3
                    for item in batch:
                        self.sent[(key.name, item["payload"]["seq"])] = item
                body = {"contract": "energy_minute", "envelopes": batch}
                try:
                    reply = client.post("/v1/entries", json=body)
                except httpx.HTTPError as exc:  # a hang (30 s) or a dropped connection
                    self._fail(f"{type(exc).__name__}: {exc}")
                    return
                if reply.status_code == 503:
                    kind = reply.headers.get("content-type", "")
                    if reply.headers.get("Retry-After") != "1" or "problem+json" not in kind:
                        self._fail(f"503 without Retry-After or problem+json: {reply.headers}")
                        return
                    with self.progress:
                        self.refused.append(reply.json()["detail"])
                    retry = batch
                    continue
                if reply.status_code != 200:
                    self._fail(f"{reply.status_code} {reply.text}")
                    return
                results = reply.json()["results"]
                # New envelopes are accepted; a resend after a 503 may find them committed.
                allowed = {"accepted", "duplicate"} if retry else {"accepted"}
                if {r["status"] for r in results} - allowed:
                    self._fail(f"{'resent' if retry else 'new'} envelopes answered {results}")
                    return
                with self.progress:
                    for item, result in zip(batch, results, strict=True):
                        self.acked[(key.name, item["payload"]["seq"])] = result["log_tag_id"]
                    self.progress.notify_all()
                retry = []

    def _fail(self, failure: str) -> None:
        with self.progress:
            self.failures.append(failure)
            self.progress.notify_all()


def wait_for_a_new_writer(server: Gateway, old: int) -> None:
    """Until the writer started after `old` died runs."""

    def started() -> bool:
        pid = server.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return len(children) == 1 and int(children[0]) != old

    wait_until(started, 30, f"a new writer after {old}")


def test_killing_the_writer_mid_commit_loses_nothing_confirmed(own_gateway: Gateway) -> None:
    server = own_gateway
    kills = 5
    with Hammer(server, devices=12) as hammer:
        for kill in range(kills):
            # Killed only once the last writer has confirmed more: load is on, commits in flight.
            hammer.wait_for_acks(60 * (kill + 1), f"acks before kill {kill + 1}")
            victim = server.writer_pid()
            os.kill(victim, signal.SIGKILL)
            wait_for_a_new_writer(server, victim)
        hammer.wait_for_acks(60 * (kills + 1), "acks after the last kill")
    assert not hammer.failures, hammer.failures
    # Kills caught commits in flight (else this tested nothing): their requests were told
    # the writer restarted before confirming them.
    assert len(hammer.refused) >= kills, hammer.refused
    assert any("before this commit was confirmed" in detail for detail in hammer.refused)

    logged = {
        (item["entry"]["payload"]["device_id"], item["entry"]["payload"]["seq"]): item
        for item in server.export()
        if item["entry"]["contract"] == "energy_minute@1"
    }
    for key, tag in hammer.acked.items():
        assert logged[key]["log_tag_id"] == tag, key
    # Resends: whatever was acknowledged is a duplicate with its tag; what was sent but never
    # acknowledged (a 503 as the test stopped) is accepted now or a duplicate, never a conflict.
    everything = list(hammer.sent.items())
    for start in range(0, len(everything), 1000):
        chunk = everything[start : start + 1000]
        results = submit(server, *(item for _, item in chunk))
        for (key, _), result in zip(chunk, results, strict=True):
            if key in hammer.acked:
                assert result == {
                    "status": "duplicate", "log_tag_id": hammer.acked[key], "error": None,
                    "code": 200,
                }, (key, result)  # fmt: skip
            else:
                assert result["status"] in ("accepted", "duplicate"), (key, result)
    exported = server.export()
    keys = [(i["entry"]["payload"]["device_id"], i["entry"]["payload"]["seq"]) for i in exported
            if i["entry"]["contract"] == "energy_minute@1"]  # fmt: skip
    assert len(keys) == len(set(keys)) == len(hammer.sent)  # each envelope once, none lost
    log = (server.data_dir / f"gateway-{server.url.rsplit(':', 1)[1]}.log").read_text()
    assert log.count("the writer exited") == kills and "unhandled error" not in log


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
        replies: list[httpx.Response] = []

        def recorded() -> bool:
            body = {"contract": "energy_minute", "envelopes": [later]}
            with server.client() as client:
                replies.append(client.post("/v1/entries", json=body))
            return replies[-1].status_code == 200

        wait_until(recorded, 20, "the writer to come back", interval=0.1)
        *refused, reply = replies
        for early in refused:  # while the writer restarts: a 503 to retry, never a 500
            assert is_problem(early, 503) and early.headers["Retry-After"] == "1", early.text
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
    wait_until(lambda: process_gone(restarted), 10, "the writer to stop with its gateway")


class EventStreamClient(threading.Thread):
    """A client of GET /v1/stream: `opened` once its first event (ready) arrived, `ended`
    once the server closed it."""

    def __init__(self, server: Gateway, token: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.url}/v1/stream"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.opened = threading.Event()
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=120) as reply:
                for line in reply.iter_lines():
                    if line == "event: ready":
                        self.opened.set()
        except httpx.HTTPError:
            pass  # cut mid-stream: ended all the same
        self.ended.set()


class RawPost:
    """POST over a plain socket with `Expect: 100-continue`: the server's 100 says the
    request has reached the application, which then waits for the body."""

    def __init__(self, server: Gateway, path: str, body: bytes) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.body = body
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        self.reader = self.sock.makefile("rb")

    def wait_for_continue(self) -> None:
        """Until the server has asked for the body."""
        status = self.reader.readline()
        assert status.startswith(b"HTTP/1.1 100"), status
        assert self.reader.readline() == b"\r\n"

    def finish(self) -> tuple[int, bytes]:
        """Send the body; the status and body of the answer."""
        self.sock.sendall(self.body)
        status = int(self.reader.readline().split()[1])
        headers = {}
        while (line := self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        answer = self.reader.read(int(headers["content-length"]))
        self.sock.close()
        return status, answer


def refuses_connections(server: Gateway) -> bool:
    """Whether nothing listens on the gateway's port any more."""
    host, port = server.url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_stop_finishes_requests_under_way_closes_streams_then_stops_the_writer(
    database_url: str, tmp_path: Path
) -> None:
    from gateway.cli import SHUTDOWN_GRACE

    server = start_gateway(tmp_path, database_url=database_url)
    try:
        key = server.device("meter-1", "hoa-1")
        listener = EventStreamClient(server, server.app_key("audit"))
        listener.start()
        assert listener.opened.wait(30), "the event stream did not open"
        batch = [envelope(key, minute(key.name, seq)) for seq in range(1, 1001)]
        body = json.dumps({"contract": "energy_minute", "envelopes": batch}).encode()
        under_way = RawPost(server, "/v1/entries", body)
        under_way.wait_for_continue()
        writer = server.writer_pid()

        # As systemd stops a service: SIGTERM to every process of it, the writer too.
        server.process.send_signal(signal.SIGTERM)
        os.kill(writer, signal.SIGTERM)
        wait_until(lambda: refuses_connections(server), 30, "new connections to be refused")
        status, answer = under_way.finish()  # the request under way still completes
        assert status == 200, answer
        results = json.loads(answer)["results"]
        assert [r["status"] for r in results] == ["accepted"] * 1000

        assert listener.ended.wait(SHUTDOWN_GRACE + 30), "the event stream was not closed"
        server.process.wait(SHUTDOWN_GRACE + 30)
        wait_until(lambda: process_gone(writer), 30, "the writer to stop after its gateway")
    finally:
        server.stop()
    again = start_gateway(tmp_path, database_url=database_url)
    try:
        logged = {item["log_tag_id"] for item in again.export()}
    finally:
        again.stop()
    assert {r["log_tag_id"] for r in results} <= logged
