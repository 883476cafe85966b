"""The `patio-proof/v1` bundle (DESIGN.md pinned format 8): building and strict parsing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.encoding import hexdecode
from ledger.errors import FormatError

FORMAT = "patio-proof/v1"
# DESIGN.md pinned format 6: the Patio/Zenroom log_tag prefix, then the hex leaf hash.
LOG_TAG_PREFIX = "c274b5"
LOG_TAG_LENGTH = len(LOG_TAG_PREFIX) + 64


def log_tag_id(leaf_hash: bytes) -> str:
    """The log tag id of a leaf hash."""
    return LOG_TAG_PREFIX + leaf_hash.hex()


def leaf_hash_of_tag(tag: Any) -> bytes:
    """The leaf hash a log tag id names; FormatError if it is not one."""
    if not isinstance(tag, str) or len(tag) != LOG_TAG_LENGTH or not tag.startswith(LOG_TAG_PREFIX):
        raise FormatError(f"log_tag_id must be {LOG_TAG_PREFIX!r} followed by 64 lowercase hex")
    return hexdecode(tag[len(LOG_TAG_PREFIX) :], what="log_tag_id", length=32)


@dataclass(frozen=True, kw_only=True)
class Anchor:
    """One anchor of a checkpoint on an EVM chain, as carried in a bundle."""

    chain_id: int
    tx_hash: str
    block_number: int | None
    contract: str | None
    tree_size: int
    root: bytes
    consistency: list[bytes]

    def to_json(self) -> dict[str, Any]:
        """The bundle's JSON shape."""
        return {
            "chain_id": self.chain_id,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "contract": self.contract,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "consistency": [h.hex() for h in self.consistency],
        }


# Why a payload may have been dropped (docs/retention.md).
REDACTION_REASONS = ("retention", "erasure")


@dataclass(frozen=True, kw_only=True)
class Redaction:
    """Why an entry's payload was dropped: `reason`, the policy or request, when."""

    reason: str
    reference: str
    at: str

    def to_json(self) -> dict[str, Any]:
        """The bundle's JSON shape."""
        return {"reason": self.reason, "reference": self.reference, "at": self.at}


@dataclass(frozen=True, kw_only=True)
class ProofBundle:
    """A parsed bundle: every field present and of the right type, nothing yet verified."""

    log_tag_id: str
    leaf_index: int
    entry: dict[str, Any] | None  # None: the payload was dropped, see `redacted`
    tree_size: int
    hashes: list[bytes]
    checkpoint: str
    log_key: str
    device_key: str | None  # None with a dropped payload: no signature left to check
    anchors: list[Anchor]
    redacted: Redaction | None = None

    @property
    def leaf_hash(self) -> bytes:
        """The leaf hash the log tag id names."""
        return leaf_hash_of_tag(self.log_tag_id)

    def to_json(self) -> dict[str, Any]:
        """The bundle file's JSON object (with `leaf_hash` and `redacted` only when the
        payload was dropped)."""
        obj = {
            "format": FORMAT,
            "log_tag_id": self.log_tag_id,
            "leaf_index": self.leaf_index,
            "entry": self.entry,
            "inclusion": {"tree_size": self.tree_size, "hashes": [h.hex() for h in self.hashes]},
            "checkpoint": self.checkpoint,
            "log_key": self.log_key,
            "device_key": self.device_key,
            "anchors": [anchor.to_json() for anchor in self.anchors],
        }
        if self.redacted is not None:
            obj["leaf_hash"] = self.leaf_hash.hex()
            obj["redacted"] = self.redacted.to_json()
        return obj

    @classmethod
    def parse(cls, data: Any) -> ProofBundle:
        """Check the shape of a bundle object; FormatError names the first unusable field."""
        obj = _object(data, "bundle")
        if obj.get("format") != FORMAT:
            raise FormatError(f"format must be {FORMAT!r}, not {obj.get('format')!r}")
        inclusion = _object(obj.get("inclusion"), "inclusion")
        anchors = obj.get("anchors", [])
        if not isinstance(anchors, list):
            raise FormatError("anchors must be a list")
        tag = _string(obj, "log_tag_id")
        redacted = None
        if "redacted" in obj:
            # A dropped payload: no entry and no device key, the leaf hash said outright.
            redacted = _redaction(obj["redacted"])
            if obj.get("entry") is not None:
                raise FormatError("entry must be null in a bundle with `redacted`")
            if obj.get("device_key") is not None:
                raise FormatError("device_key must be null in a bundle with `redacted`")
            leaf = hexdecode(_string(obj, "leaf_hash"), what="leaf_hash", length=32)
            if leaf != leaf_hash_of_tag(tag):
                raise FormatError("leaf_hash is not the hash the log_tag_id names")
            entry, device_key = None, None
        else:
            entry, device_key = _object(obj.get("entry"), "entry"), _string(obj, "device_key")
        return cls(
            log_tag_id=tag,
            leaf_index=_count(obj, "leaf_index"),
            entry=entry,
            tree_size=_count(inclusion, "tree_size", "inclusion.tree_size"),
            hashes=_hashes(inclusion.get("hashes"), "inclusion.hashes"),
            checkpoint=_string(obj, "checkpoint"),
            log_key=_string(obj, "log_key"),
            device_key=device_key,
            anchors=[_anchor(a, i) for i, a in enumerate(anchors)],
            redacted=redacted,
        )


def _redaction(value: Any) -> Redaction:
    obj = _object(value, "redacted")
    reason = _string(obj, "reason", "redacted.reason")
    if reason not in REDACTION_REASONS:
        raise FormatError(f"redacted.reason must be one of {', '.join(REDACTION_REASONS)}")
    return Redaction(
        reason=reason,
        reference=_string(obj, "reference", "redacted.reference"),
        at=_string(obj, "at", "redacted.at"),
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{what} must be a JSON object")
    return value


def _string(obj: dict[str, Any], key: str, what: str | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise FormatError(f"{what or key} must be a string")
    return value


def _count(obj: dict[str, Any], key: str, what: str | None = None) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{what or key} must be a non-negative integer")
    return value


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise FormatError(f"{what} must be a list of hex hashes")
    return [hexdecode(h, what=f"{what}[{i}]", length=32) for i, h in enumerate(value)]


def _anchor(value: Any, position: int) -> Anchor:
    what = f"anchors[{position}]"
    obj = _object(value, what)
    contract = obj.get("contract")
    block = obj.get("block_number")
    if contract is not None and not isinstance(contract, str):
        raise FormatError(f"{what}.contract must be an address or null")
    if block is not None and (not isinstance(block, int) or isinstance(block, bool)):
        raise FormatError(f"{what}.block_number must be an integer or null")
    return Anchor(
        chain_id=_count(obj, "chain_id", f"{what}.chain_id"),
        tx_hash=_string(obj, "tx_hash", f"{what}.tx_hash"),
        block_number=block,
        contract=contract,
        tree_size=_count(obj, "tree_size", f"{what}.tree_size"),
        root=hexdecode(_string(obj, "root", f"{what}.root"), what=f"{what}.root", length=32),
        consistency=_hashes(obj.get("consistency", []), f"{what}.consistency"),
    )
