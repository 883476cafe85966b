"""`registry`: device registrations, key rotations and revocations, recorded in the log.

The gateway signs these with its registry key, so an auditor can prove from the log
alone which device key was valid when.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from ledger.keys import NamedKey
from ledger.log import Submission

REGISTRY_DEVICE = "_registry"  # the (device_id, seq) stream of registry entries
Action = Literal[
    "register_community",
    "register_device",
    "revoke_device",
    "rotate_device_key",
    "erase_device_payloads",  # docs/retention.md: a device's payloads dropped on request
]


class RegistryPayload(BaseModel):
    """What a registry entry records."""

    device_id: Literal["_registry"]
    seq: int
    action: Action
    subject: dict[str, Any]
    at: str


class RegistryContract:
    """Builds the signed registry entries the admin routes append."""

    name: ClassVar[str] = "registry"
    version: ClassVar[int] = 1

    @property
    def tag(self) -> str:
        """`registry@1`."""
        return f"{self.name}@{self.version}"

    def submission(
        self, *, signer: NamedKey, seq: int, action: Action, subject: dict[str, Any], at: str
    ) -> Submission:
        """A registry entry signed by the gateway's registry key."""
        payload = {
            "device_id": REGISTRY_DEVICE,
            "seq": seq,
            "action": action,
            "subject": subject,
            "at": at,
        }
        return Submission(
            contract=self.tag,
            payload=payload,
            sig=signer.sign_payload(payload),
            device_id=REGISTRY_DEVICE,
            seq=seq,
        )
