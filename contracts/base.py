"""The contract interface, the directory of device keys contracts check against, and errors."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple, Protocol

import nacl.signing
from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.encoding import canonical_json
from ledger.errors import FormatError, VerificationError
from ledger.keys import verify_signature
from ledger.log import Appended, Log, Submission

DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # DESIGN.md pinned format 3
MAX_CLOCK_SKEW = timedelta(minutes=5)  # how far in the future a reading may claim to be


class ContractError(Exception):
    """A submission the contract refuses; `status` is the HTTP status it maps to."""

    status: ClassVar[int] = 422
    title: ClassVar[str] = "Rejected by contract"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SchemaError(ContractError):
    """The request does not match the contract's schema."""

    title = "Invalid submission"


class UnknownDevice(ContractError):
    """The signer is not a registered device."""

    status = 403
    title = "Unknown device"


class Forbidden(ContractError):
    """The signer may not submit this (revoked key, other community)."""

    status = 403
    title = "Forbidden"


class BadSignature(ContractError):
    """The signature does not verify with the device's registered key."""

    status = 401
    title = "Bad signature"


class NotFound(ContractError):
    """A read contract found nothing."""

    status = 404
    title = "Not found"


@dataclass(frozen=True, kw_only=True)
class DeviceRecord:
    """What the directory knows of a device."""

    device_id: str
    community_id: str
    public_key: str
    verify_key: nacl.signing.VerifyKey
    revoked: bool


class Directory(Protocol):
    """Device keys and communities, as the gateway's registry holds them."""

    def device(self, device_id: str) -> DeviceRecord | None:
        """The device, or None when it was never registered."""
        ...

    def key_that_signed(self, device_id: str, payload: Any, sig: str) -> str | None:
        """Which of the device's keys, past or present, made this signature (for bundles)."""
        ...


class Checked(NamedTuple):
    """A signature a transport verified: with which registered key, over which JCS bytes."""

    key: str
    payload_jcs: bytes


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a contract may use: the directory, the log, and the time of the request."""

    directory: Directory
    log: Log
    now: datetime
    community: str | None = None  # set when the transport already names the community
    readable: frozenset[str] | None = None  # communities the caller may read (None: all)
    checked: Checked | None = None  # what the transport already verified (see `precheck`)


def strict_model(model: type[BaseModel], data: Any, what: str) -> Any:
    """Validate `data` strictly; a refusal names the first bad field."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or what
        raise SchemaError(f"{what}: {where}: {error['msg']}") from exc


class Strict(BaseModel):
    """Base for signed data: no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


def check_signed(
    context: Context, *, device_id: str, payload: dict[str, Any], sig: str
) -> tuple[DeviceRecord, bytes]:
    """Check the device may submit and signed JCS(payload); returns it and the payload bytes."""
    device = context.directory.device(device_id)
    if device is None:
        raise UnknownDevice(f"device {device_id!r} is not registered")
    if device.revoked:
        raise Forbidden(f"device {device_id!r} has been revoked")
    if context.community is not None and device.community_id != context.community:
        raise Forbidden(f"device {device_id!r} does not belong to community {context.community!r}")
    # A transport may have checked this signature over the same canonical bytes already
    # (see `precheck`); it still has to be with the key the device has now.
    if context.checked is not None and context.checked.key == device.public_key:
        return device, context.checked.payload_jcs
    try:
        payload_jcs = canonical_json(payload)
        verify_signature(device.verify_key, payload_jcs, sig)
    except FormatError as exc:
        raise SchemaError(str(exc)) from exc
    except VerificationError as exc:
        raise BadSignature(f"signature does not verify with the key of {device_id!r}") from exc
    return device, payload_jcs


def precheck(contract: EnvelopeContract, envelope: Any, directory: Directory) -> Checked | None:
    """The registered key the envelope's signature verifies with and the payload's JCS, or
    None (then the contract checks it in full); lets a transport spend its own spare CPU on
    the signature and the encoding."""
    signed = contract.signed(envelope)
    if signed is None:
        return None
    device_id, payload, sig = signed
    device = directory.device(device_id)
    if device is None or device.revoked:
        return None
    try:
        payload_jcs = canonical_json(payload)
        verify_signature(device.verify_key, payload_jcs, sig)
    except (FormatError, VerificationError):
        return None
    return Checked(device.public_key, payload_jcs)


def not_in_future(moment: datetime, context: Context, what: str) -> None:
    """Refuse timestamps further ahead than the allowed clock skew."""
    if moment > context.now + MAX_CLOCK_SKEW:
        raise SchemaError(f"{what} {moment.isoformat()} is in the future")


class Contract(ABC):
    """A named, versioned rule set run with the Restroom request shape {"data", "keys"}."""

    name: ClassVar[str]
    version: ClassVar[int]
    summary: ClassVar[str]
    request_model: ClassVar[type[BaseModel]]
    response_model: ClassVar[type[BaseModel] | None] = None

    @property
    def tag(self) -> str:
        """`<name>@<version>`, recorded in every entry this contract accepts."""
        return f"{self.name}@{self.version}"


class ReadContract(Contract):
    """A contract that only reads the log."""

    @abstractmethod
    def run(self, request: Any, context: Context) -> dict[str, Any]:
        """Answer a parsed request."""


class EnvelopeContract(Contract):
    """A contract whose unit is one signed submission, so a batch can share one commit."""

    @abstractmethod
    def admit(self, envelope: Any, context: Context) -> Submission:
        """Validate and check one envelope; the Submission the log should record."""

    def signed(self, envelope: Any) -> tuple[str, Any, str] | None:
        """(device id, payload, sig) of an envelope, for `precheck`; None: not offered."""
        return None

    def admit_request(self, request: Any, context: Context) -> Submission:
        """The Submission for a Restroom request; by default the envelope is `data`."""
        if not isinstance(request, dict):
            raise SchemaError("request must be an object {data, keys}")
        return self.admit(request.get("data"), context)

    def respond(self, appended: Appended, submission: Submission) -> dict[str, Any]:
        """The response for one recorded submission."""
        return {"status": appended.status, "log_tag_id": appended.entry.log_tag_id}
