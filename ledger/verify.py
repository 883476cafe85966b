"""The offline verifier: checks a proof bundle or a consistency proof with no network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import merkle
from ledger.bundle import ProofBundle, leaf_hash_of_tag, log_tag_id
from ledger.encoding import canonical_json, hexdecode
from ledger.errors import FormatError, VerificationError
from ledger.keys import decode_public_key, verify_signature
from ledger.note import Checkpoint, NoteVerifier


@dataclass(frozen=True, kw_only=True)
class VerifiedBundle:
    """What a valid bundle proves."""

    bundle: ProofBundle
    checkpoint: Checkpoint
    key_pinned: bool

    @property
    def payload_checked(self) -> bool:
        """Whether the entry hash and the device signature were checked: not when the
        payload was dropped (`bundle.redacted`), only inclusion and the checkpoint were."""
        return self.bundle.redacted is None


def verify_bundle(
    data: Any, *, log_key: str | None, require_payload: bool = False
) -> VerifiedBundle:
    """Check every claim of a `patio-proof/v1` bundle.

    FormatError when the bundle is unusable; VerificationError naming the failed check
    (log key, checkpoint signature, inclusion, entry hash, log tag, device signature, anchor).
    A bundle whose payload was dropped (docs/retention.md) proves only that its leaf hash
    is in the log: inclusion, checkpoint and anchors are checked, the rest cannot be, and
    `require_payload` turns that into a VerificationError ("payload").
    """
    bundle = ProofBundle.parse(data)
    if bundle.redacted is not None and require_payload:
        raise VerificationError(
            "payload",
            f"the payload was removed ({bundle.redacted.reason}, {bundle.redacted.reference}, "
            f"at {bundle.redacted.at}): only inclusion of its leaf hash can be checked",
        )
    carried = NoteVerifier.parse(bundle.log_key)
    if log_key is not None:
        pinned = NoteVerifier.parse(log_key)
        if pinned != carried:
            raise VerificationError(
                "log key", "the bundle names another log key than the pinned one"
            )
    checkpoint = Checkpoint.open(bundle.checkpoint, carried)
    if bundle.tree_size != checkpoint.tree_size:
        raise VerificationError(
            "inclusion",
            f"proof is for tree size {bundle.tree_size}, the checkpoint is {checkpoint.tree_size}",
        )

    if bundle.entry is None:
        # Payload dropped: the leaf hash stands in for the entry (ProofBundle.parse checked
        # that it is the one the log tag id names).
        merkle.verify_inclusion(
            bundle.leaf_hash,
            bundle.leaf_index,
            checkpoint.tree_size,
            bundle.hashes,
            checkpoint.root_hash,
        )
        _verify_anchors(bundle, checkpoint)
        return VerifiedBundle(bundle=bundle, checkpoint=checkpoint, key_pinned=log_key is not None)

    entry = _entry_fields(bundle.entry)
    leaf = merkle.leaf_hash(canonical_json(bundle.entry))
    tagged = leaf_hash_of_tag(bundle.log_tag_id)

    def included(candidate: bytes) -> bool:
        try:
            merkle.verify_inclusion(
                candidate,
                bundle.leaf_index,
                checkpoint.tree_size,
                bundle.hashes,
                checkpoint.root_hash,
            )
        except VerificationError:
            return False
        return True

    # Tell apart which claim is false: the proof itself, the entry or the tag.
    if not included(leaf):
        if leaf != tagged and included(tagged):
            raise VerificationError(
                "entry hash", "the entry's bytes do not hash to the leaf the log recorded"
            )
        merkle.verify_inclusion(
            leaf, bundle.leaf_index, checkpoint.tree_size, bundle.hashes, checkpoint.root_hash
        )
    if tagged != leaf:
        raise VerificationError(
            "log tag", f"log_tag_id does not name this entry (expected {log_tag_id(leaf)})"
        )

    assert bundle.device_key is not None  # ProofBundle.parse: a string beside an entry
    device_key = decode_public_key(bundle.device_key)
    verify_signature(device_key, canonical_json(entry["payload"]), entry["sig"])
    _verify_anchors(bundle, checkpoint)
    return VerifiedBundle(bundle=bundle, checkpoint=checkpoint, key_pinned=log_key is not None)


def _verify_anchors(bundle: ProofBundle, checkpoint: Checkpoint) -> None:
    for position, anchor in enumerate(bundle.anchors):
        try:
            merkle.verify_consistency(
                anchor.tree_size,
                checkpoint.tree_size,
                anchor.consistency,
                anchor.root,
                checkpoint.root_hash,
            )
        except VerificationError as exc:
            raise VerificationError(
                "anchor",
                f"anchors[{position}] root is not an ancestor of the checkpoint: {exc.message}",
            ) from exc


def _entry_fields(entry: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(entry.get("payload"), dict):
        raise FormatError("entry.payload must be a JSON object")
    if not isinstance(entry.get("sig"), str):
        raise FormatError("entry.sig must be a string")
    return entry


def verify_consistency_files(
    old_note: str, new_note: str, proof: Any, *, log_key: str
) -> tuple[Checkpoint, Checkpoint]:
    """Check that the log of `new_note` extends the log of `old_note`."""
    verifier = NoteVerifier.parse(log_key)
    old = Checkpoint.open(old_note, verifier)
    new = Checkpoint.open(new_note, verifier)
    if old.origin != new.origin:
        raise VerificationError("consistency", "the checkpoints name different logs")
    if not isinstance(proof, dict) or not isinstance(proof.get("hashes"), list):
        raise FormatError('consistency proof must be a JSON object {"hashes": [hex, ...]}')
    hashes = [hexdecode(h, what=f"hashes[{i}]", length=32) for i, h in enumerate(proof["hashes"])]
    merkle.verify_consistency(old.tree_size, new.tree_size, hashes, old.root_hash, new.root_hash)
    return old, new
