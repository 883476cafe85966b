"""The writer's core (`decide`): a signature the HTTP process checked still has to match the
device's current key, and everything else is the contract's, as without the precheck."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.base import Checked, DeviceRecord
from contracts.energy.minute import entry_minutes
from gateway.submissions import Admit, decide, envelope_contract
from ledger.encoding import parse_json
from ledger.keys import NamedKey, decode_public_key
from ledger.log import Log, open_data_dir


class Keys:
    """A directory of one device whose key can be swapped (a rotation)."""

    def __init__(self, key: NamedKey) -> None:
        self.key = key

    def device(self, device_id: str) -> DeviceRecord | None:
        if device_id != self.key.name:
            return None
        return DeviceRecord(
            device_id=device_id,
            community_id="hoa-1",
            public_key=self.key.public_key_b64,
            verify_key=decode_public_key(self.key.public_key_b64),
            revoked=False,
        )

    def key_that_signed(self, device_id: str, payload: Any, sig: str) -> str | None:
        return None


def envelope(key: NamedKey, seq: int) -> dict[str, Any]:
    start = (datetime.now(UTC) - timedelta(minutes=seq)).strftime("%Y-%m-%dT%H:%M:00Z")
    payload = {
        "device_id": key.name,
        "seq": seq,
        "start": start,
        "period_s": 60,
        "readings": {"t": {"unit": "Cel", "n": 1, "missing": 0, "avg": 20.5}},
    }
    return {"payload": payload, "sig": key.sign_payload(payload)}


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return open_data_dir(tmp_path)


def precheck(envelope: Any, directory: Keys) -> Checked | None:
    return envelope_contract("energy_minute").precheck(envelope, directory, datetime.now(UTC))


def statuses(
    log: Log, directory: Keys, envelopes: list[Any], verified: list[Checked | None]
) -> Any:
    request = Admit(
        contract="energy_minute", envelopes=envelopes, now=time.time(), verified=verified
    )
    [verdicts] = decide([request], log=log, directory=directory)
    return [(v.result["status"], v.result["code"]) for v in verdicts]


def test_a_precheck_with_a_key_since_rotated_is_checked_again(log: Log) -> None:
    old, new = NamedKey.generate("meter-1"), NamedKey.generate("meter-1")
    directory = Keys(old)
    signed_old = envelope(old, 1)
    checked_with = precheck(signed_old, directory)
    assert checked_with is not None and checked_with.key == old.public_key_b64
    directory.key = new  # rotated between the HTTP process's check and the commit
    assert statuses(log, directory, [signed_old], [checked_with]) == [("rejected", 401)]
    assert statuses(log, directory, [envelope(new, 2)], [None]) == [("accepted", 201)]


def test_a_precheck_never_lets_a_bad_signature_through(log: Log) -> None:
    key = NamedKey.generate("meter-1")
    directory = Keys(key)
    forged = envelope(key, 1)
    forged["payload"]["seq"] = 7  # no longer what was signed
    assert precheck(forged, directory) is None
    # Unclaimed, the contract checks everything itself: signature first, schema as always.
    claimed = statuses(log, directory, [forged, {"payload": {}, "sig": ""}], [None, None])
    assert claimed == [("rejected", 401), ("rejected", 422)]


def test_the_precheck_derives_the_rollup_minutes_the_log_gives() -> None:
    key = NamedKey.generate("meter-1")
    signed = envelope(key, 1)
    # Integral floats travel as JCS integers, kW scales, a temperature is not rolled up.
    signed["payload"]["readings"] = {
        "t": {"unit": "Cel", "n": 1, "missing": 0, "avg": 20.5},
        "p": {"unit": "kW", "n": 60, "missing": 0, "avg": 1.0},
        "e": {"unit": "Wh", "sum": 16.6665},
        "w": {"unit": "W", "n": 0, "missing": 60},
    }
    signed["sig"] = key.sign_payload(signed["payload"])
    checked = precheck(signed, Keys(key))
    assert checked is not None
    arrived = pickle.loads(pickle.dumps(checked))  # the hand-off to the writer
    logged = parse_json(arrived.payload_jcs, what="entry")  # as `patio reports rebuild` reads it
    assert arrived.derived == entry_minutes(logged)
    minute = int(datetime.fromisoformat(logged["start"]).timestamp())
    assert arrived.derived == (  # in the JCS's order, the one the log's entry has
        (minute, "e", True, 16_666, 999_990),
        (minute, "p", True, 16_667, 1_000_000),
    )
    submission = envelope_contract("energy_minute").submission(arrived)
    assert submission.derived == arrived.derived
