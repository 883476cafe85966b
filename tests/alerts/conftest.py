"""Alert fixtures: an in-process site on each database, and loopback receivers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.receivers import HttpReceiver, SmtpReceiver
from tests.alerts.site import Site


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[Site]:
    """A community on SQLite, then on PostgreSQL."""
    made = Site(tmp_path, database_url)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """An HTTP receiver on loopback (webhooks, ntfy)."""
    made = HttpReceiver()
    made.start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    """An SMTP server on loopback."""
    made = SmtpReceiver()
    made.start()
    try:
        yield made
    finally:
        made.stop()
