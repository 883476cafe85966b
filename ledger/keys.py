"""Ed25519 keys: generation, key files (0600), and device signatures over JCS payloads."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from ledger.encoding import b64decode, b64encode, canonical_json
from ledger.errors import FormatError, KeyFileError, VerificationError

# c2sp.org/signed-note: the signature type byte for Ed25519.
ED25519_ALGORITHM = b"\x01"
# The Go note package's signer-key string, reused as our key-file format.
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"


def key_id(name: str, public_key: bytes) -> bytes:
    """c2sp.org/signed-note key hash: SHA-256(name || "\\n" || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_ALGORITHM + public_key).digest()[:4]


def check_key_name(name: str) -> str:
    """Key names are non-empty and hold no whitespace or '+' (c2sp.org/signed-note)."""
    if not name or any(c.isspace() or c == "+" for c in name):
        raise FormatError(f"key name {name!r} must be non-empty without spaces or '+'")
    return name


@dataclass(frozen=True, kw_only=True)
class NamedKey:
    """An Ed25519 signing key with the name it signs notes under."""

    name: str
    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls, name: str) -> NamedKey:
        """A fresh random key."""
        return cls(name=check_key_name(name), signing_key=nacl.signing.SigningKey.generate())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return bytes(self.signing_key.verify_key)

    @property
    def public_key_b64(self) -> str:
        """The public key as a device registers it: standard base64."""
        return b64encode(self.public_key)

    @property
    def key_id(self) -> bytes:
        """The 4-byte signed-note key hash."""
        return key_id(self.name, self.public_key)

    @property
    def verifier_key(self) -> str:
        """The C2SP verifier key `<name>+<hex key id>+<base64(0x01 || public key)>`."""
        encoded = b64encode(ED25519_ALGORITHM + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of `message`."""
        return bytes(self.signing_key.sign(message).signature)

    def sign_payload(self, payload: Any) -> str:
        """Sign JCS(payload) as a device does (pinned format 2); base64 signature."""
        return b64encode(self.sign(canonical_json(payload)))

    def to_text(self) -> str:
        """The key file's one line."""
        seed = b64encode(ED25519_ALGORITHM + bytes(self.signing_key))
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id.hex()}+{seed}\n"

    @classmethod
    def from_text(cls, text: str) -> NamedKey:
        """Parse a key file's line."""
        line = text.strip()
        if not line.startswith(PRIVATE_KEY_PREFIX):
            raise KeyFileError(f"key file must start with {PRIVATE_KEY_PREFIX!r}")
        parts = line[len(PRIVATE_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise KeyFileError("key file must read PRIVATE+KEY+<name>+<key id>+<key>")
        name, hex_id, encoded = parts
        try:
            raw = b64decode(encoded, what="private key", length=33)
        except FormatError as exc:
            raise KeyFileError(str(exc)) from exc
        if raw[:1] != ED25519_ALGORITHM:
            raise KeyFileError("private key is not an Ed25519 key")
        key = cls(name=check_key_name(name), signing_key=nacl.signing.SigningKey(raw[1:]))
        if key.key_id.hex() != hex_id:
            raise KeyFileError("key id in the key file does not match the key")
        return key

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the key file readable by its owner only (mode 0600)."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from exc
        except OSError as exc:
            raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(self.to_text())

    @classmethod
    def load(cls, path: Path) -> NamedKey:
        """Read a key file written by `save`."""
        try:
            return cls.from_text(path.read_text())
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise KeyFileError(f"key file {path} is not text") from exc


def decode_public_key(public_key_b64: str) -> nacl.signing.VerifyKey:
    """A device's registered public key from its base64 form."""
    return nacl.signing.VerifyKey(b64decode(public_key_b64, what="public key", length=32))


def verify_signature(public_key: nacl.signing.VerifyKey, message: bytes, sig_b64: str) -> None:
    """Check a device signature (pinned format 2) over already-canonical bytes."""
    signature = b64decode(sig_b64, what="signature", length=64)
    try:
        public_key.verify(message, signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise VerificationError("device signature", "signature does not match") from exc
