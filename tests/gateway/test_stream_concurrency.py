"""GET /v1/stream under load: many writers for two communities, many readers, on both databases.

Every reader must get every entry it may see exactly once, in log order, whatever the commit
interleaving, and a reader that drops its connection and resumes with Last-Event-ID gets
exactly the rest. Readers are known to be subscribed when their `ready` event arrives
(the stream's first event): writers start only then, nothing waits on a timer.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ledger.keys import NamedKey
from tests.gateway.server import Gateway
from tests.gateway.test_api import envelope, is_problem, minute, unique
from tests.sse import events

WRITERS = 4  # per community, one device each
PER_WRITER = 40  # entries per device, one request each
TIMEOUT = 60.0  # seconds a reader or a writer may take before the test fails


@dataclass
class Reader:
    """One stream client: who it is, what it may see, and when it hangs up to resume."""

    token: str
    params: dict[str, str]
    expected: int
    hang_up_after: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    entries: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0

    def run(self, url: str) -> None:
        """Read until `expected` entries arrived, hanging up once and resuming if asked to."""
        last_id: str | None = None
        deadline = time.monotonic() + TIMEOUT
        while len(self.entries) < self.expected:
            headers = {"Authorization": f"Bearer {self.token}"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
                self.resumed += 1
            with httpx.stream(
                "GET", f"{url}/v1/stream", params=self.params, headers=headers, timeout=TIMEOUT
            ) as reply:
                assert reply.status_code == 200, reply.read()
                for kind, event_id, data in events(reply, deadline):
                    if kind == "ready":
                        self.ready.set()
                    if kind != "entry":
                        continue
                    self.entries.append(data)
                    last_id = event_id
                    if len(self.entries) >= self.expected:
                        break
                    if self.hang_up_after is not None and len(self.entries) == self.hang_up_after:
                        self.hang_up_after = None
                        break  # drop the connection mid-stream; resume from last_id


def write(gateway: Gateway, key: NamedKey) -> list[str]:
    """Submit a device's entries one request at a time; their log tag ids."""
    tags = []
    with gateway.client() as client:
        for seq in range(1, PER_WRITER + 1):
            reply = client.post(
                "/v1/entries",
                json={
                    "contract": "energy_minute",
                    "envelopes": [envelope(key, minute(key.name, seq))],
                },
            )
            assert reply.status_code == 200, reply.text
            [result] = reply.json()["results"]
            assert result["status"] == "accepted", result
            tags.append(result["log_tag_id"])
    return tags


def test_every_reader_gets_every_entry_once_in_log_order(gateway: Gateway) -> None:
    """40 readers (filtered by community, by scope, unfiltered; a third of them hang up and
    resume) while 8 writers commit entries for two communities concurrently."""
    mine, theirs = unique("stream-a"), unique("stream-b")
    keys_a = [gateway.device(unique("sa"), mine) for _ in range(WRITERS)]
    keys_b = [gateway.device(unique("sb"), theirs) for _ in range(WRITERS)]
    scoped = gateway.app_key(f"read:{mine}")
    admin = gateway.admin_token
    per_community = WRITERS * PER_WRITER
    kinds = [
        (scoped, {"community": mine}, per_community),  # filtered by the query
        (scoped, {}, per_community),  # filtered by the key's scope
        (admin, {"community": mine}, per_community),
        (admin, {}, 2 * per_community),  # every entry
    ]
    readers = [
        Reader(token, params, expected, hang_up_after=1 + n % 17 if n % 3 == 0 else None)
        for n in range(40)
        for token, params, expected in [kinds[n % len(kinds)]]
    ]
    with ThreadPoolExecutor(len(readers) + 2 * WRITERS) as pool:
        reading = [pool.submit(reader.run, gateway.url) for reader in readers]
        for reader, future in zip(readers, reading, strict=True):
            if not reader.ready.wait(TIMEOUT):
                future.result(timeout=0)  # its error, if it failed
                pytest.fail("a stream never sent its ready event")
        writing = {key: pool.submit(write, gateway, key) for key in keys_a + keys_b}
        written = {key: future.result(timeout=TIMEOUT) for key, future in writing.items()}
        for future in reading:
            future.result(timeout=2 * TIMEOUT)  # each reader stops at its own deadline
    tags_a = {tag for key in keys_a for tag in written[key]}
    tags_b = {tag for key in keys_b for tag in written[key]}
    for reader in readers:
        tags = [entry["log_tag_id"] for entry in reader.entries]
        indexes = [entry["index"] for entry in reader.entries]
        assert indexes == sorted(set(indexes)), "entries out of log order or repeated"
        everything = reader.token == admin and "community" not in reader.params
        assert set(tags) == (tags_a | tags_b if everything else tags_a)
        assert len(tags) == reader.expected
    assert sum(reader.resumed for reader in readers) == len(readers[::3])


def entries_after(
    gateway: Gateway, params: dict[str, str], last_id: str, count: int
) -> list[tuple[str, str]]:
    """(event id, log tag id) of the first `count` entries after `last_id`."""
    found: list[tuple[str, str]] = []
    headers = {"Authorization": f"Bearer {gateway.admin_token}", "Last-Event-ID": last_id}
    with httpx.stream(
        "GET", f"{gateway.url}/v1/stream", params=params, headers=headers, timeout=TIMEOUT
    ) as reply:
        for kind, event_id, data in events(reply, time.monotonic() + TIMEOUT):
            if len(found) == count:
                break
            if kind == "entry":
                found.append((event_id, data["log_tag_id"]))
    return found


def test_a_resumed_stream_starts_right_after_its_last_event_id(gateway: Gateway) -> None:
    """Resuming from each event id of a stream gives exactly the entries after it."""
    community = unique("stream-r")
    key = gateway.device(unique("sr"), community)
    reader = Reader(gateway.admin_token, {"community": community}, PER_WRITER)
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(reader.run, gateway.url)
        assert reader.ready.wait(TIMEOUT), "the stream never sent its ready event"
        tags = write(gateway, key)
        reading.result(timeout=TIMEOUT)
    assert [entry["log_tag_id"] for entry in reader.entries] == tags
    params = {"community": community}
    replayed = entries_after(gateway, params, "-1:-1", len(tags))
    assert [tag for _, tag in replayed] == tags
    for n, (event_id, _) in enumerate(replayed[:-1]):
        rest = entries_after(gateway, params, event_id, len(tags) - n - 1)
        assert [tag for _, tag in rest] == tags[n + 1 :]


@pytest.mark.parametrize(
    "last_event_id",
    [
        "garbage",
        "5",
        "-2:0",
        "0:-5",
        "+1:0",
        "01:0",
        "1:0:0",
        "\u0661:0",  # an Arabic-Indic digit: int() would take it
        f"{2**64}:0",  # beyond the database's integers
        "9223372036854775807:0",  # ahead of this log
    ],
)
def test_a_bad_last_event_id_is_refused_before_the_stream_starts(
    gateway: Gateway, last_event_id: str
) -> None:
    """A Last-Event-ID this log never sent is a 422 problem, not a stream that breaks."""
    with gateway.client(gateway.admin_token) as client:
        reply = client.get("/v1/stream", headers={"Last-Event-ID": last_event_id.encode()})
    assert is_problem(reply, 422, "Last-Event-ID")
