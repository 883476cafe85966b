"""The Patio/Zenroom contracts: `patio_save_energy` and `patio_load_energy_log`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, StringConstraints

from contracts.base import (
    Context,
    EnvelopeContract,
    NotFound,
    ReadContract,
    SchemaError,
    Strict,
    check_signed,
    not_in_future,
    strict_model,
)
from ledger.encoding import parse_rfc3339
from ledger.errors import FormatError, NotFoundError
from ledger.log import Appended, Submission

AMOUNT = re.compile(r"^-?\d+(\.\d+)?\s?(W|kW|Wh|kWh)$")
Short = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class DataToStore(Strict):
    """The Patio hub's reading, as its README shows it."""

    amount: Annotated[str, StringConstraints(pattern=AMOUNT.pattern)]
    datetime: Short
    sensor_id: Short
    type: Short
    community_unique_id: Short


class SavePayload(Strict):
    """What the device signs: its id, its sequence number and the Patio reading."""

    device_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    seq: Annotated[int, Field(ge=0, lt=2**53)]
    dataToStore: DataToStore


class SaveKeys(Strict):
    """The signature travels in `keys`, where Zenroom keeps keys."""

    device_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    seq: Annotated[int, Field(ge=0, lt=2**53)]
    sig: str


class SaveData(BaseModel):
    """The `data` member of a save request."""

    dataToStore: DataToStore


class SaveRequest(BaseModel):
    """`POST /api/patio_save_energy`."""

    data: SaveData
    keys: SaveKeys


class SaveResponse(BaseModel):
    """The Patio answer: the stored data and its log tag."""

    dataToStore: dict[str, Any]
    log_tag: str


class LoadData(BaseModel):
    """The `data` member of a load request."""

    log_tag_id: str


class LoadRequest(BaseModel):
    """`POST /api/patio_load_energy_log`."""

    data: LoadData
    keys: dict[str, Any] = {}


class LoadResponse(BaseModel):
    """The entry's Patio reading and a proof bundle an auditor can check offline."""

    energy_log: dict[str, Any]
    proof: dict[str, Any]


# The Patio hub's own layout (its README: "2021-10-10 10:10", UTC without a zone), with or
# without seconds; the pinned RFC 3339 form is taken too (docs/timestamps.md).
_PATIO_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?"
)


def parse_patio_datetime(text: str) -> datetime:
    """A Patio reading's `datetime`, strictly: `YYYY-MM-DD HH:MM[:SS]` in UTC, or RFC 3339."""
    match = _PATIO_DATETIME.fullmatch(text)
    if match is None:
        try:
            return parse_rfc3339(text, what="dataToStore.datetime")
        except FormatError as exc:
            raise SchemaError(
                f"dataToStore.datetime {text!r} is neither YYYY-MM-DD HH:MM[:SS] (UTC) "
                "nor RFC 3339 UTC"
            ) from exc
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise SchemaError(f"dataToStore.datetime {text!r} is not a valid date and time") from exc


class PatioSaveEnergy(EnvelopeContract):
    """Record a Patio reading signed by a registered device."""

    name = "patio_save_energy"
    version = 1
    summary = "Store a Patio energy reading (Zenroom-compatible); keys carry device_id, seq, sig."
    request_model: ClassVar[type[BaseModel]] = SaveRequest
    response_model: ClassVar[type[BaseModel] | None] = SaveResponse

    def admit(self, envelope: Any, context: Context) -> Submission:
        """An envelope here is the whole request: data from `data`, signature from `keys`."""
        return self.admit_request(envelope, context)

    def admit_request(self, request: Any, context: Context) -> Submission:
        """Check the reading and the signature over {device_id, seq, dataToStore}."""
        model = strict_model(SaveRequest, request, "request")
        payload = {
            "device_id": model.keys.device_id,
            "seq": model.keys.seq,
            "dataToStore": request["data"]["dataToStore"],
        }
        strict_model(SavePayload, payload, "payload")
        device, payload_jcs = check_signed(
            context, device_id=model.keys.device_id, payload=payload, sig=model.keys.sig
        )
        reading = model.data.dataToStore
        if reading.community_unique_id != device.community_id:
            raise SchemaError(
                f"community_unique_id {reading.community_unique_id!r} is not the device's "
                f"community {device.community_id!r}"
            )
        not_in_future(parse_patio_datetime(reading.datetime), context.now, "dataToStore.datetime")
        return Submission(
            contract=self.tag,
            payload=payload,
            sig=model.keys.sig,
            device_id=model.keys.device_id,
            seq=model.keys.seq,
            payload_jcs=payload_jcs,
        )

    def respond(self, appended: Appended, submission: Submission) -> dict[str, Any]:
        """Patio's answer shape."""
        return {
            "dataToStore": submission.payload["dataToStore"],
            "log_tag": appended.entry.log_tag_id,
        }


class PatioLoadEnergyLog(ReadContract):
    """Fetch a stored Patio reading with its proof."""

    name = "patio_load_energy_log"
    version = 1
    summary = "Load a stored reading by log_tag_id, with its patio-proof/v1 bundle."
    request_model: ClassVar[type[BaseModel]] = LoadRequest
    response_model: ClassVar[type[BaseModel] | None] = LoadResponse

    def run(self, request: Any, context: Context) -> dict[str, Any]:
        """Look the entry up and prove it."""
        model = strict_model(LoadRequest, request, "request")
        try:
            entry = context.log.entry_by_tag(model.data.log_tag_id)
        except FormatError as exc:
            raise SchemaError(str(exc)) from exc
        except NotFoundError as exc:
            raise NotFound(str(exc)) from exc
        device = context.directory.device(entry.device_id or "")
        if device is None:
            raise NotFound(f"no device key for the entry {model.data.log_tag_id}")
        if context.readable is not None and device.community_id not in context.readable:
            raise NotFound(f"no entry with log tag id {model.data.log_tag_id}")
        stored = entry.entry_object()
        payload = stored["payload"]
        energy_log = payload.get("dataToStore", payload)
        key = context.directory.key_that_signed(device.device_id, payload, stored["sig"])
        bundle = context.log.bundle(model.data.log_tag_id, device_key=key or device.public_key)
        return {"energy_log": energy_log, "proof": bundle.to_json()}
