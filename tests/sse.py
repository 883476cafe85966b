"""Server-Sent Events as the tests read them from `GET /v1/stream`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx


def events(reply: httpx.Response, deadline: float | None = None) -> Iterator[tuple[str, str, Any]]:
    """(event, id, data) of each event, until `deadline` (time.monotonic()) if one is given.

    The stream sends a `: ping` comment when idle, so a client that waits for an event
    that never comes notices its deadline within a ping interval.
    """
    fields: dict[str, str] = {}
    for line in reply.iter_lines():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("the stream did not deliver what was expected in time")
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "event" in fields:
            yield fields["event"], fields.get("id", ""), json.loads(fields.get("data", "null"))
        fields = {}
