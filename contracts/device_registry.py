"""`registry`: communities, device registrations, key rotations and revocations, on the log.

The gateway signs these with its registry key, so an auditor can prove from the log
alone which device key was valid when. The writer checks each change against the
directory inside the transaction that appends it (`RegistryContract.check`), so the entry
and the directory row commit together or not at all, and a refused change leaves nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NamedTuple

from ledger.keys import NamedKey
from ledger.log import Submission
from ledger.registry_replay import REGISTRY_DEVICE, RegistryError, RegistryView, check_change

__all__ = ["REGISTRY_DEVICE", "Action", "RegistryChange", "RegistryContract", "RegistryError"]

Action = Literal[
    "register_community",
    "register_device",
    "revoke_device",
    "rotate_device_key",
    "set_device_profile",
    "set_community_settings",
    "set_community_tariff",
]


class RegistryChange(NamedTuple):
    """A change the admin asked for (a writer request): the subject as given, its time.

    For a revocation the subject is {"id"}, for a rotation {"id", "public_key"}: the key
    being replaced is read by the writer (`RegistryContract.subject`).
    """

    action: Action
    subject: dict[str, Any]
    at: str


class RegistryContract:
    """Builds and checks the signed registry entries the writer appends."""

    name: ClassVar[str] = "registry"
    version: ClassVar[int] = 1

    @property
    def tag(self) -> str:
        """`registry@1`."""
        return f"{self.name}@{self.version}"

    def subject(self, change: RegistryChange, view: RegistryView) -> dict[str, Any]:
        """The subject to record: the change as given, plus the key a rotation or
        revocation replaces (RegistryError when there is no such device)."""
        if change.action not in ("revoke_device", "rotate_device_key"):
            return change.subject
        device = view.device(str(change.subject.get("id")))
        if device is None:
            raise RegistryError(f"no device {change.subject.get('id')!r}", status=404)
        if change.action == "revoke_device":
            return {"id": change.subject["id"], "public_key": device.public_key}
        return {
            "id": change.subject["id"],
            "old_public_key": device.public_key,
            "public_key": change.subject["public_key"],
        }

    def check(self, action: Action, subject: dict[str, Any], view: RegistryView) -> None:
        """Refuse a change the directory cannot take now: a second registration of an id, a
        rotation or revocation of an unknown or revoked device (RegistryError)."""
        check_change(action, subject, view)

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
