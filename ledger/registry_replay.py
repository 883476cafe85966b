"""The device registry as the log records it: the rules every registry change obeys, the
registry replayed from its `registry@1` entries, and that replay compared with a directory.

The gateway checks a change with these rules inside the transaction that appends it, so an
auditor replaying the entries with the same rules must arrive at the gateway's directory.
The gateway's tables are read by name (as `patio audit --local` reads `device_keys`), so the
ledger imports nothing of the gateway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine, inspect, text

from ledger.encoding import parse_json
from ledger.errors import FormatError, LedgerError

REGISTRY_DEVICE = "_registry"  # the (device_id, seq) stream of registry entries
REGISTRY_CONTRACT = "registry@1"
ACTIONS = ("register_community", "register_device", "revoke_device", "rotate_device_key")
MAX_FINDINGS = 100


class RegistryError(LedgerError):
    """A registry change the rules refuse; `status` is the HTTP status it maps to."""

    def __init__(self, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class StaleChange(RegistryError):
    """The change was planned against a device state that has changed since (a race)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, status=409)


@dataclass(kw_only=True)
class CommunityState:
    """A community as the registry knows it."""

    name: str


@dataclass(kw_only=True)
class DeviceState:
    """A device as the registry knows it: its current key, every key it had, revoked or not."""

    community_id: str
    public_key: str
    revoked: bool = False
    keys: list[str] = field(default_factory=list)  # oldest first, the current one last


class RegistryView(Protocol):
    """Lookups the rules need: the gateway's tables in a transaction, or a replay."""

    def community(self, community_id: str) -> CommunityState | None:
        """The community, or None."""
        ...

    def device(self, device_id: str) -> DeviceState | None:
        """The device, or None."""
        ...


def _text(subject: Mapping[str, Any], name: str) -> str:
    value = subject.get(name)
    if not isinstance(value, str) or not value:
        raise RegistryError(f"the change's {name!r} must be a non-empty string", status=422)
    if "\x00" in value:
        raise RegistryError(f"the change's {name!r} contains a NUL character", status=422)
    return value


def check_change(action: str, subject: Mapping[str, Any], view: RegistryView) -> None:
    """Refuse a change the registry cannot take in its current state (RegistryError)."""
    if action not in ACTIONS:
        raise RegistryError(f"unknown registry action {action!r}", status=422)
    subject_id = _text(subject, "id")
    if action == "register_community":
        _text(subject, "name")
        if view.community(subject_id) is not None:
            raise RegistryError(f"community {subject_id!r} already exists", status=409)
        return
    if action == "register_device":
        community_id = _text(subject, "community_id")
        _text(subject, "public_key")
        if view.community(community_id) is None:
            raise RegistryError(f"no community {community_id!r}", status=404)
        if view.device(subject_id) is not None:
            raise RegistryError(f"device {subject_id!r} already exists", status=409)
        return
    device = view.device(subject_id)
    if device is None:
        raise RegistryError(f"no device {subject_id!r}", status=404)
    if device.revoked:
        raise RegistryError(f"device {subject_id!r} is revoked", status=409)
    current = _text(subject, "old_public_key" if action == "rotate_device_key" else "public_key")
    if current != device.public_key:
        raise StaleChange(f"device {subject_id!r} has another key than the change names")
    if action == "rotate_device_key":
        _text(subject, "public_key")


class Registry:
    """The registry in memory, built by applying changes in log order."""

    def __init__(self) -> None:
        self.communities: dict[str, CommunityState] = {}
        self.devices: dict[str, DeviceState] = {}

    def community(self, community_id: str) -> CommunityState | None:
        """The community, or None."""
        return self.communities.get(community_id)

    def device(self, device_id: str) -> DeviceState | None:
        """The device, or None."""
        return self.devices.get(device_id)

    def apply(self, action: str, subject: Mapping[str, Any]) -> None:
        """Check a change against the rules, then make it."""
        check_change(action, subject, self)
        subject_id = subject["id"]
        if action == "register_community":
            self.communities[subject_id] = CommunityState(name=subject["name"])
        elif action == "register_device":
            key = subject["public_key"]
            self.devices[subject_id] = DeviceState(
                community_id=subject["community_id"], public_key=key, keys=[key]
            )
        elif action == "revoke_device":
            self.devices[subject_id].revoked = True
        else:  # rotate_device_key
            device = self.devices[subject_id]
            device.public_key = subject["public_key"]
            device.keys.append(subject["public_key"])


@dataclass(frozen=True, kw_only=True)
class RegistryEntry:
    """One `registry@1` entry: where it is in the log and what its payload says."""

    index: int
    payload: Any


@dataclass(kw_only=True)
class Directory:
    """A gateway's directory as it serves it; `keys` only where the source lists key history."""

    communities: dict[str, CommunityState]
    devices: dict[str, DeviceState]
    has_key_history: bool = True


def replay(entries: Iterable[RegistryEntry]) -> tuple[Registry, list[str]]:
    """The registry the entries build, and what in them breaks the rules."""
    registry = Registry()
    findings: list[str] = []
    expected_seq = 1
    for entry in entries:
        payload = entry.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("subject"), dict):
            findings.append(f"registry entry {entry.index}: its payload has no subject object")
            continue
        seq = payload.get("seq")
        if seq != expected_seq:
            findings.append(f"registry entry {entry.index}: seq {seq!r}, expected {expected_seq}")
        expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        try:
            registry.apply(str(payload.get("action")), payload["subject"])
        except RegistryError as exc:
            findings.append(
                f"registry entry {entry.index}: {payload.get('action')} refused on replay: {exc}"
            )
    return registry, findings


def compare(replayed: Registry, directory: Directory) -> list[str]:
    """Every way the directory differs from the replayed registry, naming the id."""
    findings: list[str] = []
    for community_id in sorted(replayed.communities.keys() | directory.communities.keys()):
        logged = replayed.communities.get(community_id)
        served = directory.communities.get(community_id)
        if served is None:
            findings.append(f"community {community_id!r} is on the log but not in the directory")
        elif logged is None:
            findings.append(f"community {community_id!r} is in the directory but not on the log")
        elif logged != served:
            findings.append(
                f"community {community_id!r} differs: the log says {logged}, the directory {served}"
            )
    for device_id in sorted(replayed.devices.keys() | directory.devices.keys()):
        device = replayed.devices.get(device_id)
        listed = directory.devices.get(device_id)
        if listed is None:
            findings.append(f"device {device_id!r} is on the log but not in the directory")
            continue
        if device is None:
            findings.append(f"device {device_id!r} is in the directory but not on the log")
            continue
        for name in ("community_id", "public_key", "revoked", "keys"):
            if name == "keys" and not directory.has_key_history:
                continue
            logged_value, served_value = getattr(device, name), getattr(listed, name)
            if logged_value != served_value:
                findings.append(
                    f"device {device_id!r}: {name} is {served_value!r} in the directory, "
                    f"{logged_value!r} on the log"
                )
    return findings


def check(entries: Iterable[RegistryEntry], directory: Directory) -> list[str]:
    """Replay the registry entries and compare with the directory: the findings, at most 100."""
    replayed, findings = replay(entries)
    findings += compare(replayed, directory)
    return findings[:MAX_FINDINGS]


# -- the database as a source (`patio audit --local`) -----------------------------------


def local_entries(engine: Engine) -> Iterator[RegistryEntry]:
    """The registry entries of the log in this database, in log order."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT idx, entry FROM entries WHERE device_id = :d ORDER BY idx"),
            {"d": REGISTRY_DEVICE},
        ).all()
    for index, data in rows:
        try:
            payload = parse_json(bytes(data), what=f"entry {index}").get("payload")
        except (FormatError, AttributeError):
            payload = None
        yield RegistryEntry(index=index, payload=payload)


def local_directory(engine: Engine) -> Directory | None:
    """The gateway's directory tables in this database; None when it has none."""
    if "devices" not in inspect(engine).get_table_names():
        return None
    with engine.connect() as conn:
        communities = {
            str(row.id): CommunityState(name=row.name)
            for row in conn.execute(text("SELECT id, name FROM communities"))
        }
        history: dict[str, list[str]] = {}
        for device_id, key in conn.execute(
            text("SELECT device_id, public_key FROM device_keys ORDER BY id")
        ):
            history.setdefault(str(device_id), []).append(str(key))
        devices = {
            str(row.id): DeviceState(
                community_id=row.community_id,
                public_key=row.public_key,
                revoked=row.revoked_at is not None,
                keys=history.get(str(row.id), []),
            )
            for row in conn.execute(
                text("SELECT id, community_id, public_key, revoked_at FROM devices")
            )
        }
    return Directory(communities=communities, devices=devices)
