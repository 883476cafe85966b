"""The contract interface, the directory of device keys contracts check against, and errors."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple, Protocol

import nacl.signing
from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.encoding import canonical_json
from ledger.errors import FormatError, LedgerError, VerificationError
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
    """An envelope its contract admitted: what the log should record, and the registered key
    its signature verified with (a transport's precheck sends this to the writer)."""

    key: str
    payload: Any
    sig: str
    device_id: str
    seq: int | None
    minute: str | None
    payload_jcs: bytes
    # What the contract derived from the payload for the writer's append hooks, computed
    # here with the spare CPU of the process that checked it (energy_minute: its rollup
    # minutes, contracts/energy/minute.py `entry_minutes`); None: the hooks derive it.
    derived: Any = None

    def __reduce__(self) -> tuple[type[Checked], tuple[Any, ...]]:
        """Pickled without the payload (None), which its JCS holds: the writer reads it from
        those bytes if it needs it (ledger.log.Submission.payload). The parsed dict was most
        of the hand-off's pickling: 14.7 -> 4.6 us an envelope, both ways."""
        return Checked, (self.key, None, self.sig, self.device_id, self.seq, self.minute,
                         self.payload_jcs, self.derived)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a contract may use: the directory, the log, and the time of the request."""

    directory: Directory
    log: Log
    now: datetime
    community: str | None = None  # set when the transport already names the community
    readable: frozenset[str] | None = None  # communities the caller may read (None: all)


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


def may_submit(directory: Directory, community: str | None, device_id: str) -> DeviceRecord:
    """The device, if it is registered, not revoked, and of `community` when one is given."""
    device = directory.device(device_id)
    if device is None:
        raise UnknownDevice(f"device {device_id!r} is not registered")
    if device.revoked:
        raise Forbidden(f"device {device_id!r} has been revoked")
    if community is not None and device.community_id != community:
        raise Forbidden(f"device {device_id!r} does not belong to community {community!r}")
    return device


def _verify(device: DeviceRecord, payload_jcs: bytes, sig: str) -> None:
    try:
        verify_signature(device.verify_key, payload_jcs, sig)
    except FormatError as exc:
        raise SchemaError(str(exc)) from exc
    except VerificationError as exc:
        raise BadSignature(
            f"signature does not verify with the key of {device.device_id!r}"
        ) from exc


def signed_by_device(
    directory: Directory,
    community: str | None,
    *,
    device_id: str,
    payload: Any,
    sig: str,
    encode: Callable[[Any], bytes] = canonical_json,
) -> tuple[DeviceRecord, bytes]:
    """Check the device may submit and signed JCS(payload); returns it and the payload bytes.

    `encode` is `canonical_json` or a contract's faster equivalent for its own schema."""
    device = may_submit(directory, community, device_id)
    try:
        payload_jcs = encode(payload)
    except FormatError as exc:
        raise SchemaError(str(exc)) from exc
    _verify(device, payload_jcs, sig)
    return device, payload_jcs


def check_signed(
    context: Context, *, device_id: str, payload: dict[str, Any], sig: str
) -> tuple[DeviceRecord, bytes]:
    """`signed_by_device` with the context's directory and community."""
    return signed_by_device(
        context.directory, context.community, device_id=device_id, payload=payload, sig=sig
    )


def not_in_future(moment: datetime, now: datetime, what: str) -> None:
    """Refuse timestamps further ahead of `now` than the allowed clock skew."""
    if moment > now + MAX_CLOCK_SKEW:
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

    def check(
        self, envelope: Any, directory: Directory, now: datetime, community: str | None = None
    ) -> Checked:
        """All of `admit` but the recording, for `precheck`; this contract offers none."""
        raise NotImplementedError

    def precheck(self, envelope: Any, directory: Directory, now: datetime) -> Checked | None:
        """The envelope admitted where it arrived, with that process's spare CPU; None when
        the contract refuses it or offers no `check` (then `admit` decides, and says why)."""
        try:
            return self.check(envelope, directory, now)
        except (NotImplementedError, ContractError, LedgerError):
            return None

    def submission(self, checked: Checked) -> Submission:
        """What the log records for an admitted envelope."""
        return Submission(
            contract=self.tag,
            payload=checked.payload,
            sig=checked.sig,
            device_id=checked.device_id,
            seq=checked.seq,
            minute=checked.minute,
            payload_jcs=checked.payload_jcs,
            derived=checked.derived,
        )

    def confirm(self, checked: Checked, context: Context) -> Submission:
        """A prechecked envelope as admitted now: the device may still submit (in the
        context's community), and its signature is by the device's key of now."""
        device = may_submit(context.directory, context.community, checked.device_id)
        if device.public_key != checked.key:  # rotated since the precheck
            _verify(device, checked.payload_jcs, checked.sig)
        return self.submission(checked)

    def admit_request(self, request: Any, context: Context) -> Submission:
        """The Submission for a Restroom request; by default the envelope is `data`."""
        if not isinstance(request, dict):
            raise SchemaError("request must be an object {data, keys}")
        return self.admit(request.get("data"), context)

    def respond(self, appended: Appended, submission: Submission) -> dict[str, Any]:
        """The response for one recorded submission."""
        return {"status": appended.status, "log_tag_id": appended.entry.log_tag_id}
