"""C2SP signed notes (c2sp.org/signed-note) and tlog checkpoints (c2sp.org/tlog-checkpoint)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from ledger.encoding import b64decode, b64encode
from ledger.errors import FormatError, VerificationError
from ledger.keys import ED25519_ALGORITHM, NamedKey, check_key_name, key_id

# c2sp.org/signed-note: each signature line starts with an em dash and a space.
SIGNATURE_PREFIX = "\u2014 "


@dataclass(frozen=True, kw_only=True)
class NoteVerifier:
    """A C2SP verifier key: the name, key id and Ed25519 public key a note is checked with."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        """Parse `<name>+<hex key id>+<base64(0x01 || public key)>`."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise FormatError("log key must read <name>+<hex key id>+<base64 key>")
        name, hex_id, encoded = parts
        check_key_name(name)
        try:
            raw_id = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise FormatError("log key id is not hex") from exc
        raw = b64decode(encoded, what="log key", length=33)
        if raw[:1] != ED25519_ALGORITHM or len(raw_id) != 4:
            raise FormatError("log key is not an Ed25519 verifier key")
        if key_id(name, raw[1:]) != raw_id:
            raise FormatError("log key id does not match its public key")
        return cls(name=name, key_id=raw_id, public_key=raw[1:])

    def __str__(self) -> str:
        encoded = b64encode(ED25519_ALGORITHM + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"


def sign_note(body: str, signer: NamedKey) -> str:
    """Sign a note body (which ends in a newline) and return the full note text."""
    if not body.endswith("\n"):
        raise ValueError("a note body must end with a newline")
    signature = signer.sign(body.encode())
    return f"{body}\n{SIGNATURE_PREFIX}{signer.name} {b64encode(signer.key_id + signature)}\n"


def open_note(note: str, verifier: NoteVerifier) -> str:
    """Return the body of `note` if `verifier` signed it; raise otherwise."""
    if not isinstance(note, str):
        raise FormatError("checkpoint must be a signed note string")
    body, sep, signatures = note.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise FormatError("checkpoint is not a signed note: no signature block")
    body += "\n"
    found = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise FormatError(f"malformed signature line in checkpoint: {line[:40]!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise FormatError("checkpoint signature is not base64") from exc
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue  # a cosigner's signature, or another key's: not ours to check
        found = True
        try:
            nacl.signing.VerifyKey(verifier.public_key).verify(body.encode(), raw[4:])
        except (nacl.exceptions.BadSignatureError, ValueError) as exc:
            raise VerificationError(
                "checkpoint signature", f"signature by {verifier.name} does not verify"
            ) from exc
    if not found:
        raise VerificationError(
            "checkpoint signature", f"no signature by log key {verifier.name} on the checkpoint"
        )
    return body


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A tree head: origin, size and root hash (c2sp.org/tlog-checkpoint)."""

    origin: str
    tree_size: int
    root_hash: bytes

    def body(self) -> str:
        """The note body: origin, decimal size, base64 root, each on its own line."""
        return f"{self.origin}\n{self.tree_size}\n{b64encode(self.root_hash)}\n"

    def sign(self, signer: NamedKey) -> str:
        """The signed checkpoint note."""
        return sign_note(self.body(), signer)

    @classmethod
    def parse_body(cls, body: str) -> Checkpoint:
        """Parse a checkpoint body; extension lines after the root are allowed and ignored."""
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise FormatError("checkpoint body must have origin, size and root lines")
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        if not origin:
            raise FormatError("checkpoint origin is empty")
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise FormatError(f"checkpoint tree size is not a decimal number: {size_text!r}")
        root = b64decode(root_text, what="checkpoint root hash", length=32)
        return cls(origin=origin, tree_size=int(size_text), root_hash=root)

    @classmethod
    def open(cls, note: str, verifier: NoteVerifier) -> Checkpoint:
        """Verify a signed checkpoint with `verifier` and parse it."""
        return cls.parse_body(open_note(note, verifier))
