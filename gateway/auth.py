"""Admin tokens and app keys: random, shown once, stored as SHA-256, checked per request."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

ADMIN_PREFIX = "padm_"
APP_PREFIX = "papp_"


def new_secret(prefix: str) -> str:
    """A 256-bit random token with a prefix that says what it is."""
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What is stored: the tokens carry 256 bits of entropy, so one SHA-256 suffices."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who is asking: the admin, an app with scopes, or nobody."""

    admin: bool = False
    app_id: int | None = None
    scopes: frozenset[str] = frozenset()

    @property
    def audits(self) -> bool:
        """Admins and apps with the `audit` scope read every community."""
        return self.admin or "audit" in self.scopes

    def can_read(self, community_id: str) -> bool:
        """May this caller read the community's data?"""
        return self.audits or f"read:{community_id}" in self.scopes

    @property
    def readable(self) -> frozenset[str] | None:
        """The communities this caller may read; None means all of them."""
        if self.audits:
            return None
        return frozenset(s.removeprefix("read:") for s in self.scopes if s.startswith("read:"))
