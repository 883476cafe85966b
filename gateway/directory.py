"""The device directory contracts check against: registered keys, communities, revocations."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Engine, select

from contracts.base import DeviceRecord
from contracts.device_registry import REGISTRY_DEVICE
from gateway.store import device_keys, devices
from ledger.encoding import canonical_json
from ledger.errors import LedgerError
from ledger.keys import decode_public_key, verify_signature

# Another gateway process's revocation is seen within this many seconds; this process's
# own changes are seen at once (`forget`).
CACHE_SECONDS = 1.0


class Directory:
    """Device lookups with a short cache, so a batch of envelopes costs one query."""

    def __init__(self, engine: Engine, *, registry_key: str) -> None:
        self.engine = engine
        self.registry_key = registry_key
        self._cache: dict[str, tuple[float, DeviceRecord | None]] = {}
        self._lock = threading.Lock()

    def device(self, device_id: str) -> DeviceRecord | None:
        """The device, or None when it was never registered."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(device_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
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
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[device_id] = (now, record)
        return record

    def key_that_signed(self, device_id: str, payload: Any, sig: str) -> str | None:
        """Which of the device's keys, past or present, made this signature (for bundles)."""
        if device_id == REGISTRY_DEVICE:
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
