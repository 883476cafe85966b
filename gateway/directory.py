"""The device directory: what contracts check against (registered keys, communities,
revocations), and the tables registry changes write in their entry's transaction."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, select

from contracts.alert import ALERT_DEVICE
from contracts.base import DEVICE_ID, DeviceRecord
from contracts.device_registry import REGISTRY_DEVICE
from gateway.store import device_keys, devices
from ledger.encoding import canonical_json
from ledger.errors import LedgerError
from ledger.keys import decode_public_key, verify_signature
from ledger.registry_replay import CommunityState, DeviceState
from ledger.storage import DriverCursor

# Another gateway process's changes are seen within this many seconds (one query polls
# device_changes); this process's own changes are seen at once (`forget`).
CACHE_SECONDS = 1.0
MAX_CACHED = 100_000


class Directory:
    """Device lookups cached until a change to that device is recorded in device_changes."""

    def __init__(self, engine: Engine, *, registry_key: str) -> None:
        self.engine = engine
        self.registry_key = registry_key
        self._cache: dict[str, DeviceRecord | None] = {}
        self._lock = threading.Lock()
        self._polled = float("-inf")
        self._seen: int | None = None  # the newest device_changes id applied
        self._evictions = 0  # a row read before an eviction may be stale: not cached

    def device(self, device_id: str) -> DeviceRecord | None:
        """The device, or None when it was never registered."""
        if time.monotonic() - self._polled >= CACHE_SECONDS:
            self.refresh(stale_only=True)
        try:
            return self._cache[device_id]  # only ids that passed the check below are cached
        except KeyError:
            evictions = self._evictions
        if not DEVICE_ID.fullmatch(device_id):
            # Not an id (DESIGN.md format 3), so never registered; and PostgreSQL could not
            # even be asked about one with a NUL in it.
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(devices).where(devices.c.id == device_id)).first()
        record = None
        if row is not None:
            record = DeviceRecord(
                device_id=row.id,
                community_id=row.community_id,
                public_key=row.public_key,
                verify_key=decode_public_key(row.public_key),
                revoked=row.revoked_at is not None,
            )
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            if evictions == self._evictions:
                self._cache[device_id] = record
        return record

    def refresh(self, *, stale_only: bool = False) -> None:
        """Drop what is cached of devices changed since the last refresh (one query)."""
        with self._lock:
            now = time.monotonic()
            if stale_only and now - self._polled < CACHE_SECONDS:
                return  # another thread just polled
            # A device row read while this runs is not cached if anything was evicted
            # meanwhile (`_evictions`), so a stale row cannot outlive its change.
            self._polled = now
            with self.engine.connect() as conn:
                cursor = DriverCursor(conn)  # the writer refreshes before every commit
                if self._seen is None:
                    self._seen = cursor.scalar("SELECT coalesce(max(id), 0) FROM device_changes")
                    return
                changes = cursor.execute(
                    "SELECT id, device_id FROM device_changes WHERE id > ? ORDER BY id",
                    (self._seen,),
                ).fetchall()
            for change_id, device_id in changes:
                self._cache.pop(device_id, None)
                self._seen = change_id
            self._evictions += bool(changes)

    def changed_since_refresh(self, conn: Connection) -> bool:
        """Whether a device changed after the last refresh, as `conn`'s transaction sees it."""
        newest = DriverCursor(conn).scalar("SELECT coalesce(max(id), 0) FROM device_changes")
        return self._seen is not None and int(newest) > self._seen

    def key_that_signed(self, device_id: str, payload: Any, sig: str) -> str | None:
        """Which of the device's keys, past or present, made this signature (for bundles)."""
        if device_id in (REGISTRY_DEVICE, ALERT_DEVICE):  # both signed by the registry key
            candidates = [self.registry_key]
        else:
            with self.engine.connect() as conn:
                candidates = [
                    row[0]
                    for row in conn.execute(
                        select(device_keys.c.public_key)
                        .where(device_keys.c.device_id == device_id)
                        .order_by(device_keys.c.id.desc())
                    )
                ]
        message = canonical_json(payload)
        for candidate in candidates:
            try:
                verify_signature(decode_public_key(candidate), message, sig)
            except LedgerError:
                continue
            return candidate
        return None

    def forget(self, device_id: str) -> None:
        """Drop a cached device after this process changed it."""
        with self._lock:
            self._cache.pop(device_id, None)
            self._evictions += 1


class TableView:
    """The directory tables as the registry rules see them, inside one transaction.

    On the driver's cursor: the append runs `within` inside a psycopg pipeline, where a
    SQLAlchemy statement finds no result description yet and reads as empty.
    """

    def __init__(self, conn: Connection) -> None:
        self.cursor = DriverCursor(conn)

    def community(self, community_id: str) -> CommunityState | None:
        """The community, or None."""
        row = self.cursor.execute(
            "SELECT name, time_zone FROM communities WHERE id = ?", (community_id,)
        ).fetchone()
        return None if row is None else CommunityState(name=row[0], time_zone=row[1])

    def device(self, device_id: str) -> DeviceState | None:
        """The device (without its key history and profile, which no rule needs), or None."""
        row = self.cursor.execute(
            "SELECT community_id, public_key, revoked_at FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
        if row is None:
            return None
        return DeviceState(community_id=row[0], public_key=row[1], revoked=row[2] is not None)

    def write(self, action: str, subject: dict[str, Any], at: str) -> None:
        """Make a change the rules accepted (`check_change`), in the registry entry's
        transaction."""
        execute, subject_id = self.cursor.execute, subject["id"]
        if action == "set_community_tariff":
            return  # kept on the log only: reports replay it (gateway/routes/tariffs.py)
        if action == "register_community":
            execute(
                "INSERT INTO communities (id, name, created_at, time_zone) VALUES (?, ?, ?, ?)",
                (subject_id, subject["name"], at, subject["time_zone"]),
            )
            return
        if action == "set_community_settings":
            execute(
                "UPDATE communities SET time_zone = ? WHERE id = ?",
                (subject["time_zone"], subject_id),
            )
            return
        profile = subject.get("profile")
        stored_profile = None if profile is None else canonical_json(profile).decode()
        if action == "register_device":
            execute(
                "INSERT INTO devices (id, community_id, public_key, created_at, profile) "
                "VALUES (?, ?, ?, ?, ?)",
                (subject_id, subject["community_id"], subject["public_key"], at, stored_profile),
            )
        elif action == "set_device_profile":
            execute("UPDATE devices SET profile = ? WHERE id = ?", (stored_profile, subject_id))
        if action in ("register_device", "rotate_device_key"):
            execute(
                "INSERT INTO device_keys (device_id, public_key, created_at) VALUES (?, ?, ?)",
                (subject_id, subject["public_key"], at),
            )
        if action == "rotate_device_key":
            key = subject["public_key"]
            execute("UPDATE devices SET public_key = ? WHERE id = ?", (key, subject_id))
        elif action == "revoke_device":
            execute("UPDATE devices SET revoked_at = ? WHERE id = ?", (at, subject_id))
        # Every gateway process polls device_changes to drop what it cached of this device.
        execute("INSERT INTO device_changes (device_id) VALUES (?)", (subject_id,))
