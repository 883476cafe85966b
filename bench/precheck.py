"""Time the HTTP process's precheck of one batched envelope, step by step.

Run: .venv/bin/python -m bench.precheck [--readings 8] [--repeat 7] [--number 2000]

One signed energy_minute envelope as bench.gateway sends them, parsed as the gateway parses
a batch body, then `EnergyMinuteContract.check` and each of its steps timed alone (timeit,
the minimum of the repeats, in thread CPU time): the strict schema, the start minute, the
directory lookup, the payload's JCS, the signature's base64 and the Ed25519 verification.
`check` is also timed with a verify key that takes any signature: all but the verification,
measured rather than subtracted; "other" is what that costs beyond the timed steps. Each
figure is also given in verifications, bench.gateway's unit, whose target for the whole
gateway is 2.5 an envelope.
A dev tool: the directory is an in-memory stand-in for the gateway's cached one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from bench.gateway import minute
from contracts.base import DeviceRecord, may_submit
from contracts.energy_minute import (
    EnergyMinuteContract,
    _check_start,
    parse_envelope,
    payload_jcs,
)
from gateway.deps import json_body
from gateway.routes.entries import EntriesRequest
from ledger.encoding import b64decode
from ledger.keys import NamedKey, decode_public_key


class _Unverified:
    """A verify key that takes every signature: what `check` costs beside the verification."""

    def verify(self, message: bytes, signature: bytes) -> bytes:
        """The message, as PyNaCl's verify returns it."""
        return message


class _Directory:
    """One registered device, as the gateway's directory has it cached."""

    def __init__(self, device: DeviceRecord) -> None:
        self._devices = {device.device_id: device}

    def device(self, device_id: str) -> DeviceRecord | None:
        """The device, or None."""
        return self._devices.get(device_id)

    def key_that_signed(self, device_id: str, payload: Any, sig: str) -> str | None:
        """Not used by `check`."""
        raise NotImplementedError


def main() -> None:
    """Print each step's CPU time per envelope and its ratio to one verification."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    key = NamedKey.generate("bench-000")
    now = datetime.now(UTC)
    payload = minute(key.name, 1, now.replace(second=0, microsecond=0), args.readings)
    text = json.dumps({"payload": payload, "sig": key.sign_payload(payload)})
    body = ('{"contract":"energy_minute","envelopes":[' + ",".join([text] * 100) + "]}").encode()
    envelope = json_body(EntriesRequest, "application/json", body).envelopes[0]
    device = DeviceRecord(
        device_id=key.name,
        community_id="c",
        public_key=key.public_key_b64,
        verify_key=decode_public_key(key.public_key_b64),
        revoked=False,
    )
    directory = _Directory(device)
    contract = EnergyMinuteContract()
    raw = envelope["payload"]
    jcs = payload_jcs(raw)
    sig = b64decode(envelope["sig"], what="signature", length=64)
    verify = device.verify_key.verify

    def per_call(function: Callable[[], object], number: int = args.number) -> float:
        runs = timeit.repeat(function, number=number, repeat=args.repeat, timer=time.thread_time)
        return min(runs) / number

    parse = (
        per_call(lambda: json_body(EntriesRequest, "application/json", body), args.number // 100)
        / 100
    )
    steps = {
        "schema (msgspec)": per_call(lambda: parse_envelope(envelope)),
        "start minute": per_call(lambda: _check_start(payload["start"], now)),
        "directory": per_call(lambda: may_submit(directory, None, key.name)),
        "payload JCS": per_call(lambda: payload_jcs(raw)),
        "signature base64": per_call(
            lambda: b64decode(envelope["sig"], what="signature", length=64)
        ),
    }
    verification = per_call(lambda: verify(jcs, sig))
    check = per_call(lambda: contract.check(envelope, directory, now))
    # Timed directly, not as a difference of two figures that each swing under load.
    unverified = _Directory(dataclasses.replace(device, verify_key=cast(Any, _Unverified())))
    beside = per_call(lambda: contract.check(envelope, unverified, now))

    def line(name: str, seconds: float, indent: int = 2) -> None:
        label = " " * indent + name
        print(f"{label:30} {seconds * 1e6:6.1f}  {seconds / verification:5.2f} v")

    print(f"one envelope of {args.readings} readings ({len(jcs)} bytes of JCS), us per call:")
    line("body parse (per envelope)", parse)
    line("check", check)
    line("Ed25519 verification", verification, 4)
    line("all but the verification", beside, 4)
    for name, spent in steps.items():
        line(name, spent, 6)
    line("other", beside - sum(steps.values()), 6)
    print(
        f"  parse and check beside the verification: {(beside + parse) * 1e6:.1f} us "
        f"({(beside + parse) / verification:.2f} v); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
