"""`energy_minute`: the edge agent's signed minute aggregate (DESIGN.md, Contracts)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Discriminator, Field, StringConstraints, Tag

from contracts.base import (
    Context,
    EnvelopeContract,
    SchemaError,
    Strict,
    check_signed,
    not_in_future,
    strict_model,
)
from ledger.encoding import parse_rfc3339
from ledger.errors import FormatError
from ledger.log import Submission

DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
SensorName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Gauge(Strict):
    """A sampled quantity: temperature, power."""

    unit: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    n: Annotated[int, Field(ge=0)]
    missing: Annotated[int, Field(ge=0)]
    avg: Finite | None = None
    min: Finite | None = None
    max: Finite | None = None


class Counter(Strict):
    """An energy counter's increase over the minute, in Wh."""

    unit: Literal["Wh"]
    sum: Finite
    n: Annotated[int, Field(ge=0)] | None = None
    missing: Annotated[int, Field(ge=0)] | None = None


class Switch(Strict):
    """An on/off input (a motor): was it on, and for what share of the minute."""

    unit: Literal["bool"]
    any: bool
    on_fraction: Annotated[float, Field(ge=0, le=1)]
    n: Annotated[int, Field(ge=0)] | None = None
    missing: Annotated[int, Field(ge=0)] | None = None


def _reading_kind(value: Any) -> str:
    # The unit says what a reading is, so a refusal names the right fields.
    unit = value.get("unit") if isinstance(value, dict) else getattr(value, "unit", None)
    return (
        {"Wh": "counter", "bool": "switch"}.get(unit, "gauge") if isinstance(unit, str) else "gauge"
    )


Reading = Annotated[
    Annotated[Counter, Tag("counter")]
    | Annotated[Switch, Tag("switch")]
    | Annotated[Gauge, Tag("gauge")],
    Discriminator(_reading_kind),
]


class EnergyMinute(Strict):
    """The signed payload."""

    device_id: DeviceId
    seq: Annotated[int, Field(ge=0, lt=2**53)]
    start: str
    period_s: Literal[60]
    readings: Annotated[dict[SensorName, Reading], Field(min_length=1, max_length=256)]


class Envelope(Strict):
    """What a device submits: the payload and its base64 Ed25519 signature."""

    payload: EnergyMinute
    sig: str


class EnergyMinuteRequest(BaseModel):
    """Restroom request shape: the envelope goes in `data`."""

    data: Envelope
    keys: dict[str, Any] = {}


class EnvelopeResult(BaseModel):
    """The outcome for one envelope."""

    status: Literal["accepted", "duplicate"]
    log_tag_id: str


def _check_start(text: str, context: Context) -> datetime:
    try:
        start = parse_rfc3339(text, what="start", fraction=False)
    except FormatError as exc:
        raise SchemaError(str(exc)) from exc
    if start.second:
        raise SchemaError(f"start {text!r} is not on the minute")
    not_in_future(start, context, "start")
    return start


class EnergyMinuteContract(EnvelopeContract):
    """One signed minute aggregate per device per minute (a second one is a conflict)."""

    name = "energy_minute"
    version = 1
    summary = "Record a device's signed minute aggregate (DESIGN.md energy_minute)."
    request_model: ClassVar[type[BaseModel]] = EnergyMinuteRequest
    response_model: ClassVar[type[BaseModel] | None] = EnvelopeResult

    def signed(self, envelope: Any) -> tuple[str, Any, str] | None:
        """The payload's device id, the payload and the signature, if they have those types."""
        if not isinstance(envelope, dict):
            return None
        payload, sig = envelope.get("payload"), envelope.get("sig")
        if not isinstance(payload, dict) or not isinstance(sig, str):
            return None
        device_id = payload.get("device_id")
        return (device_id, payload, sig) if isinstance(device_id, str) else None

    def admit(self, envelope: Any, context: Context) -> Submission:
        """Strict schema, minute-aligned start not in the future, registered key, signature."""
        model = strict_model(Envelope, envelope, "envelope")
        _check_start(model.payload.start, context)
        payload = envelope["payload"]
        _, payload_jcs = check_signed(
            context, device_id=model.payload.device_id, payload=payload, sig=model.sig
        )
        return Submission(
            contract=self.tag,
            payload=payload,
            sig=model.sig,
            device_id=model.payload.device_id,
            seq=model.payload.seq,
            minute=model.payload.start,  # the strict parser took one spelling: it is the key
            payload_jcs=payload_jcs,
        )
