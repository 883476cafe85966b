"""`energy_minute`: the edge agent's signed minute aggregate (DESIGN.md, Contracts)."""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import orjson
from msgspec import Meta
from pydantic import BaseModel, Discriminator, Field, StringConstraints, Tag

from contracts.base import (
    Checked,
    Context,
    Directory,
    EnvelopeContract,
    SchemaError,
    Strict,
    not_in_future,
    signed_by_device,
)
from contracts.energy.minute import entry_minutes
from ledger.encoding import NotPlain, canonical_json, encode_plain, parse_rfc3339, plain_item
from ledger.errors import FormatError
from ledger.log import Submission

# The schema twice: msgspec Structs, which admission runs (a fifth of the Pydantic models'
# cost), and the Pydantic models below, which FastAPI documents and /api validates with.
# tests/gateway/test_envelope_schema.py holds the two to the same verdicts over a corpus.
DEVICE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SENSOR_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
COUNT_LIMIT = 2**53 - 1  # beyond it JCS cannot encode the number (RFC 8785 section 3.2.2.3)
FLOAT_MAX = 1.7976931348623157e308
# Python's `$` also matches before a final newline; Pydantic's (Rust) regex does not.
_DeviceIdS = Annotated[str, Meta(pattern=DEVICE_PATTERN.replace("$", r"\Z"))]
_SensorNameS = Annotated[str, Meta(pattern=SENSOR_PATTERN.replace("$", r"\Z"))]
_CountS = Annotated[int, Meta(ge=0, le=COUNT_LIMIT)]
_FiniteS = Annotated[float, Meta(ge=-FLOAT_MAX, le=FLOAT_MAX)]  # NaN fails both bounds


class _GaugeS(msgspec.Struct, forbid_unknown_fields=True):
    unit: Annotated[str, Meta(min_length=1, max_length=16)]
    n: _CountS
    missing: _CountS
    avg: _FiniteS | None = None
    min: _FiniteS | None = None
    max: _FiniteS | None = None


class _CounterS(msgspec.Struct, forbid_unknown_fields=True):
    unit: Literal["Wh"]
    sum: _FiniteS
    n: _CountS | None = None
    missing: _CountS | None = None


class _SwitchS(msgspec.Struct, forbid_unknown_fields=True):
    unit: Literal["bool"]
    any: bool
    on_fraction: Annotated[float, Meta(ge=0, le=1)]
    n: _CountS | None = None
    missing: _CountS | None = None


class _PayloadShapeS(msgspec.Struct, forbid_unknown_fields=True):
    device_id: str
    seq: Annotated[int, Meta(ge=0, lt=2**53)]
    start: str
    period_s: Annotated[float, Meta(ge=60, le=60)]  # as Pydantic's Literal[60]: 60.0 too
    # Each reading is checked by its kind below: the unit says which (see _reading_kind).
    readings: Annotated[dict[str, Any], Meta(min_length=1, max_length=256)]


class _PayloadS(_PayloadShapeS):
    device_id: _DeviceIdS
    readings: Annotated[dict[_SensorNameS, Any], Meta(min_length=1, max_length=256)]


class _EnvelopeShapeS(msgspec.Struct, forbid_unknown_fields=True):
    payload: _PayloadShapeS
    sig: str


class _EnvelopeS(_EnvelopeShapeS):
    payload: _PayloadS


# The patterns as msgspec runs them (one `search` a string, 0.4 us each), for a valid
# envelope in two calls: the sensor names are checked joined by commas.
_DEVICE_ID = re.compile(DEVICE_PATTERN.replace("$", r"\Z"))
_NAME = SENSOR_PATTERN.removeprefix("^").removesuffix("$")
_SENSOR_NAMES = re.compile(rf"^{_NAME}(?:,{_NAME})*\Z")


_READING_KINDS: dict[Any, type[msgspec.Struct]] = {"Wh": _CounterS, "bool": _SwitchS}


def _refusal(exc: msgspec.ValidationError, where: str = "") -> SchemaError:
    message, _, path = str(exc).partition(" - at `$")  # msgspec: "... - at `$.payload.seq`"
    field = (where + path.rstrip("`")).lstrip(".") or "envelope"
    return SchemaError(f"envelope: {field}: {message}")


def parse_envelope(envelope: Any) -> _EnvelopeShapeS:
    """The envelope checked strictly against the schema; SchemaError names the first bad field."""
    try:  # the schema without its patterns, then the patterns in two calls
        model = msgspec.convert(envelope, _EnvelopeShapeS, strict=True)
        readings = model.payload.readings
        names = ",".join(readings)  # each comma a separator only if no name holds one
        valid = bool(
            _DEVICE_ID.search(model.payload.device_id)
            and names.count(",") == len(readings) - 1
            and _SENSOR_NAMES.search(names)
        )
    except msgspec.ValidationError:
        valid = False
    if not valid:  # the schema with its patterns decides, and names the first bad field
        try:
            model = msgspec.convert(envelope, _EnvelopeS, strict=True)
        except msgspec.ValidationError as exc:
            raise _refusal(exc) from None
    for name, reading in model.payload.readings.items():
        unit = reading.get("unit") if type(reading) is dict else None
        kind = _READING_KINDS.get(unit, _GaugeS) if type(unit) is str else _GaugeS
        try:
            msgspec.convert(reading, kind, strict=True)
        except msgspec.ValidationError as exc:
            raise _refusal(exc, f"payload.readings.{name}") from None
    return model


# The fields of each kind of reading that may hold a float (or an int beyond 2**53): the
# schema leaves every other value of a payload plain for JCS (see `payload_jcs`).
_FLOAT_FIELDS: dict[Any, tuple[str, ...]] = {"Wh": ("sum",), "bool": ("on_fraction",)}
_GAUGE_FLOATS = ("avg", "min", "max")


def _plain_payload(payload: dict[str, Any]) -> dict[str, Any]:
    # What ledger.encoding's `_plain` returns for a payload parse_envelope accepted, looking
    # only at what the schema leaves open: each reading's unit (any text for a gauge) and
    # its float fields, and `start` (parse_envelope takes any string). The rest is plain by
    # the schema: ids and sensor names match ASCII patterns, counts and seq are ints below
    # 2**53, `any` is a bool, a missing value is None, and period_s is 60 or 60.0 (JCS 60).
    readings = {}
    for name, reading in payload["readings"].items():
        unit = reading["unit"]
        if not unit.isascii():
            raise NotPlain
        plain = reading
        for field in _FLOAT_FIELDS.get(unit, _GAUGE_FLOATS):
            value = reading.get(field)
            number = plain_item(value)
            if number is not value:  # an integral float, written as an int
                if plain is reading:
                    plain = reading.copy()
                plain[field] = number
        readings[name] = plain
    if not payload["start"].isascii():
        raise NotPlain
    return {**payload, "period_s": 60, "readings": readings}


def payload_jcs(payload: dict[str, Any]) -> bytes:
    """`canonical_json(payload)` for a payload `parse_envelope` accepted, in half the time."""
    try:
        encoded = encode_plain(_plain_payload(payload))
    except NotPlain:
        encoded = None
    return canonical_json(payload) if encoded is None else encoded


DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_PATTERN)]
SensorName = Annotated[str, StringConstraints(pattern=SENSOR_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=COUNT_LIMIT)]


class Gauge(Strict):
    """A sampled quantity: temperature, power."""

    unit: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    n: Count
    missing: Count
    avg: Finite | None = None
    min: Finite | None = None
    max: Finite | None = None


class Counter(Strict):
    """An energy counter's increase over the minute, in Wh."""

    unit: Literal["Wh"]
    sum: Finite
    n: Count | None = None
    missing: Count | None = None


class Switch(Strict):
    """An on/off input (a motor): was it on, and for what share of the minute."""

    unit: Literal["bool"]
    any: bool
    on_fraction: Annotated[float, Field(ge=0, le=1)]
    n: Count | None = None
    missing: Count | None = None


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


@functools.lru_cache(maxsize=4096)
def _minute(text: str) -> datetime:
    """`start` as a time on the minute (cached: a batch's devices report the same minutes)."""
    try:
        start = parse_rfc3339(text, what="start", fraction=False)
    except FormatError as exc:
        raise SchemaError(str(exc)) from exc
    if start.second:
        raise SchemaError(f"start {text!r} is not on the minute")
    return start


def _check_start(text: str, now: datetime) -> datetime:
    start = _minute(text)
    not_in_future(start, now, "start")
    return start


class EnergyMinuteContract(EnvelopeContract):
    """One signed minute aggregate per device per minute (a second one is a conflict)."""

    name = "energy_minute"
    version = 1
    summary = "Record a device's signed minute aggregate (DESIGN.md energy_minute)."
    request_model: ClassVar[type[BaseModel]] = EnergyMinuteRequest
    response_model: ClassVar[type[BaseModel] | None] = EnvelopeResult

    def check(
        self, envelope: Any, directory: Directory, now: datetime, community: str | None = None
    ) -> Checked:
        """Strict schema, minute-aligned start not in the future, registered key, signature."""
        model = parse_envelope(envelope)
        payload = model.payload
        _check_start(payload.start, now)
        raw = envelope["payload"]  # the values as sent: the signature is over their JCS
        device, jcs = signed_by_device(
            directory, community, device_id=payload.device_id, payload=raw, sig=model.sig,
            encode=payload_jcs,
        )  # fmt: skip
        return Checked(
            key=device.public_key,
            payload=raw,
            sig=model.sig,
            device_id=payload.device_id,
            seq=payload.seq,
            minute=payload.start,  # the strict parser took one spelling: it is the key
            payload_jcs=jcs,
            # From the JCS, as the writer and `patio reports rebuild` read the payload.
            derived=entry_minutes(orjson.loads(jcs)),
        )

    def admit(self, envelope: Any, context: Context) -> Submission:
        """The envelope's `check`, as the log records it."""
        checked = self.check(envelope, context.directory, context.now, context.community)
        return self.submission(checked)
