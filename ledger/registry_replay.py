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
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy import Engine, inspect, text

from ledger import merkle
from ledger.bundle import log_tag_id
from ledger.encoding import canonical_json, parse_json
from ledger.errors import FormatError, LedgerError, VerificationError

REGISTRY_DEVICE = "_registry"  # the (device_id, seq) stream of registry entries
REGISTRY_CONTRACT = "registry@1"
ACTIONS = (
    "register_community",
    "register_device",
    "revoke_device",
    "rotate_device_key",
    "set_device_profile",
    "set_community_settings",
    "set_community_tariff",
)
DEFAULT_TIME_ZONE = "UTC"  # of a community registered before communities had one
MAX_FINDINGS = 100
LIST_PAGE = 1000  # the most GET /v1/communities and /v1/devices return at once


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
    time_zone: str = DEFAULT_TIME_ZONE


@dataclass(kw_only=True)
class DeviceState:
    """A device as the registry knows it: its current key, every key it had, revoked or not."""

    community_id: str
    public_key: str
    revoked: bool = False
    keys: list[str] = field(default_factory=list)  # oldest first, the current one last
    profile: dict[str, Any] | None = None  # the declared sensors (contracts/device_types.py)


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


def _profile(subject: Mapping[str, Any]) -> dict[str, Any] | None:
    profile = subject.get("profile")
    if profile is not None and not isinstance(profile, dict):
        raise RegistryError("the change's 'profile' must be an object or null", status=422)
    return profile


def _tariff(subject: Mapping[str, Any]) -> None:
    # The document itself is validated where it is read (contracts/energy/tariff.py): the
    # registry only keeps it on the log, so that a report's inputs are provable.
    for name in ("tariff", "contracted_kW"):
        if not isinstance(subject.get(name), dict):
            raise RegistryError(f"the change's {name!r} must be an object", status=422)


def check_change(action: str, subject: Mapping[str, Any], view: RegistryView) -> None:
    """Refuse a change the registry cannot take in its current state (RegistryError)."""
    if action not in ACTIONS:
        raise RegistryError(f"unknown registry action {action!r}", status=422)
    subject_id = _text(subject, "id")
    if "time_zone" in subject or action == "set_community_settings":
        _text(subject, "time_zone")
    _profile(subject)
    if action == "register_community":
        _text(subject, "name")
        if view.community(subject_id) is not None:
            raise RegistryError(f"community {subject_id!r} already exists", status=409)
        return
    if action == "set_community_settings":
        if view.community(subject_id) is None:
            raise RegistryError(f"no community {subject_id!r}", status=404)
        return
    if action == "set_community_tariff":
        _tariff(subject)
        if view.community(subject_id) is None:
            raise RegistryError(f"no community {subject_id!r}", status=404)
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
    if action == "set_device_profile":
        return
    current = _text(subject, "old_public_key" if action == "rotate_device_key" else "public_key")
    if current != device.public_key:
        raise StaleChange(f"device {subject_id!r} has another key than the change names")
    if action == "rotate_device_key" and _text(subject, "public_key") == device.public_key:
        # A resend of a rotation that committed: recording it again would say nothing.
        raise RegistryError(f"device {subject_id!r} already has this key", status=409)


class Registry:
    """The registry in memory, built by applying changes in log order."""

    def __init__(self) -> None:
        self.communities: dict[str, CommunityState] = {}
        self.devices: dict[str, DeviceState] = {}
        # A community's tariff change as recorded ({"id", "tariff", "contracted_kW"}); not
        # part of the directory tables, so `compare` does not look at it.
        self.tariffs: dict[str, dict[str, Any]] = {}

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
            self.communities[subject_id] = CommunityState(
                name=subject["name"], time_zone=subject.get("time_zone", DEFAULT_TIME_ZONE)
            )
        elif action == "set_community_settings":
            self.communities[subject_id].time_zone = subject["time_zone"]
        elif action == "set_community_tariff":
            self.tariffs[subject_id] = dict(subject)
        elif action == "register_device":
            key = subject["public_key"]
            self.devices[subject_id] = DeviceState(
                community_id=subject["community_id"],
                public_key=key,
                keys=[key],
                profile=subject.get("profile"),
            )
        elif action == "set_device_profile":
            self.devices[subject_id].profile = subject.get("profile")
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


class Finding(NamedTuple):
    """A disagreement: an `entry` (its index), or a `community` or `device` (its id)."""

    kind: Literal["entry", "community", "device"]
    subject: int | str
    message: str


def replay(entries: Iterable[RegistryEntry]) -> tuple[Registry, list[Finding]]:
    """The registry the entries build, and what in them breaks the rules."""
    registry = Registry()
    findings: list[Finding] = []
    expected_seq = 1
    for entry in entries:
        payload = entry.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("subject"), dict):
            findings.append(Finding("entry", entry.index, "is a registry entry with no subject"))
            continue
        seq = payload.get("seq")
        if seq != expected_seq:
            message = f"is registry seq {seq!r}, expected {expected_seq}"
            findings.append(Finding("entry", entry.index, message))
        expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        action = payload.get("action")
        try:
            registry.apply(str(action), payload["subject"])
        except RegistryError as exc:
            message = f"is a registry change ({action}) the rules refuse: {exc}"
            findings.append(Finding("entry", entry.index, message))
    return registry, findings


def _differences(kind: Literal["community", "device"], subject: str, logged: Any, served: Any,
                 skip: tuple[str, ...] = ()) -> list[Finding]:  # fmt: skip
    if served is None:
        return [Finding(kind, subject, "is on the log, not in the directory")]
    if logged is None:
        return [Finding(kind, subject, "is in the directory, not on the log")]
    return [
        Finding(
            kind,
            subject,
            f"has {name} {getattr(served, name)!r} in the directory, {value!r} on the log",
        )
        for name, value in vars(logged).items()
        if name not in skip and getattr(served, name) != value
    ]


def compare(replayed: Registry, directory: Directory) -> list[Finding]:
    """Every way the directory differs from the replayed registry, naming the id."""
    findings: list[Finding] = []
    for community_id in sorted(replayed.communities.keys() | directory.communities.keys()):
        findings += _differences(
            "community",
            community_id,
            replayed.communities.get(community_id),
            directory.communities.get(community_id),
        )
    skip = () if directory.has_key_history else ("keys",)
    for device_id in sorted(replayed.devices.keys() | directory.devices.keys()):
        findings += _differences(
            "device",
            device_id,
            replayed.devices.get(device_id),
            directory.devices.get(device_id),
            skip,
        )
    return findings


@dataclass(frozen=True, kw_only=True)
class RegistryAudit:
    """What the registry check compared and found."""

    entries: int
    communities: int
    devices: int
    findings: list[Finding]

    def summary(self) -> str:
        """One line for the audit's summary."""
        verdict = "matches" if not self.findings else "does NOT match"
        return (
            f"registry: {self.entries} entries replayed; the directory of {self.communities} "
            f"communities and {self.devices} devices {verdict} the replay"
        )


def check(
    entries: Iterable[RegistryEntry], directory: Directory, *, found: Iterable[Finding] = ()
) -> RegistryAudit:
    """Replay the registry entries and compare with the directory (at most 100 findings,
    after those `found` while reading the entries)."""
    listed = list(entries)
    replayed, findings = replay(listed)
    findings = [*found, *findings, *compare(replayed, directory)]
    return RegistryAudit(
        entries=len(listed),
        communities=len(directory.communities),
        devices=len(directory.devices),
        findings=findings[:MAX_FINDINGS],
    )


def audit(
    source: Any, *, tree_size: int = 0, root: bytes | None = None, attempts: int = 3
) -> RegistryAudit | None:
    """Check a `patio audit` source's directory against its registry entries; None when the
    source has no directory (a bare log). Through a gateway, each registry entry the audited
    checkpoint (`tree_size`, `root`) covers is proven in it. A disagreement is reported only
    if it persists over `attempts` reads, as a change may commit between reading the
    entries and the directory."""
    result = None
    for _ in range(attempts):
        result = _audit_once(source, tree_size, root)
        if result is None or not result.findings:
            return result
    return result


def _audit_once(source: Any, tree_size: int, root: bytes | None) -> RegistryAudit | None:
    log = getattr(source, "log", None)  # ledger.audit.LocalSource
    if log is not None:
        directory = local_directory(log.engine)
        return None if directory is None else check(local_entries(log.engine), directory)
    client = getattr(source, "client", None)  # ledger.audit_gateway.GatewaySource
    if client is None:
        return None
    headers = getattr(source, "headers", {})
    served = gateway_directory(client, headers)
    if served is None:
        return None
    read = gateway_entries(source, client, headers, tree_size=tree_size, root=root)
    if read is None:
        return None  # no audit scope: the registry entries cannot be read
    entries, found = read
    return check(entries, served, found=found)


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


def _stored_profile(stored: str | None) -> dict[str, Any] | None:
    if stored is None:
        return None
    try:
        value = parse_json(stored, what="a device profile")
    except FormatError:
        return {"unreadable": stored}  # differs from any replayed profile: a finding
    return value if isinstance(value, dict) else {"unreadable": stored}


def local_directory(engine: Engine) -> Directory | None:
    """The gateway's directory tables in this database; None when it has none."""
    if "devices" not in inspect(engine).get_table_names():
        return None
    with engine.connect() as conn:
        communities = {
            str(row.id): CommunityState(name=row.name, time_zone=row.time_zone)
            for row in conn.execute(text("SELECT id, name, time_zone FROM communities"))
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
                profile=_stored_profile(row.profile),
            )
            for row in conn.execute(
                text("SELECT id, community_id, public_key, revoked_at, profile FROM devices")
            )
        }
    return Directory(communities=communities, devices=devices)


# -- a gateway as a source (`patio audit --gateway URL`) --------------------------------


def _get_json(client: Any, path: str, params: dict[str, Any], headers: Any) -> Any:
    """GET a JSON document; None on 404 (a gateway without the listing) or when the key may
    not read it (the listing needs an app key, the export the audit scope)."""
    try:
        response = client.get(path, params=params, headers=headers)
    except Exception as exc:  # httpx's errors; the ledger does not import httpx here
        raise LedgerError(f"cannot reach the gateway ({path}): {exc}") from exc
    if response.status_code in (401, 403, 404):
        return None
    if response.status_code != 200:
        detail = response.text[:200].strip()
        raise LedgerError(f"gateway answered {response.status_code} to {path}: {detail}")
    try:
        return response.json()
    except ValueError as exc:
        raise LedgerError(f"gateway sent invalid JSON for {path}") from exc


def _listing(client: Any, path: str, headers: Any) -> Iterator[dict[str, Any]] | None:
    first = _get_json(client, path, {"limit": LIST_PAGE}, headers)
    if first is None:
        return None

    def pages(body: Any) -> Iterator[dict[str, Any]]:
        while True:
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise LedgerError(f"GET {path} did not return {{items: [...], next}}")
            yield from body["items"]
            after = body.get("next")
            if after is None:
                return
            body = _get_json(client, path, {"limit": LIST_PAGE, "after": after}, headers)

    return pages(first)


def gateway_directory(client: Any, headers: Any) -> Directory | None:
    """The directory a gateway lists (`GET /v1/communities`, `GET /v1/devices`); None when it
    has no such listing."""
    listed_communities = _listing(client, "/v1/communities", headers)
    listed_devices = _listing(client, "/v1/devices", headers)
    if listed_communities is None or listed_devices is None:
        return None
    try:
        communities = {
            str(item["id"]): CommunityState(name=item["name"], time_zone=item["time_zone"])
            for item in listed_communities
        }
        devices = {
            str(item["id"]): DeviceState(
                community_id=item["community_id"],
                public_key=item["public_key"],
                revoked=item["revoked"],
                profile=item["profile"],
            )
            for item in listed_devices
        }
    except (KeyError, TypeError) as exc:
        raise LedgerError(f"a listed community or device is malformed: {exc}") from exc
    return Directory(communities=communities, devices=devices, has_key_history=False)


def gateway_entries(
    source: Any, client: Any, headers: Any, *, tree_size: int, root: bytes | None
) -> tuple[list[RegistryEntry], list[Finding]] | None:
    """The registry entries a gateway serves (`GET /v1/registry`), each checked against its
    log tag id and, where the audited checkpoint covers it, proven in the log; None when the
    key may not read them."""
    entries: list[RegistryEntry] = []
    findings: list[Finding] = []
    after = -1
    while True:
        body = _get_json(client, "/v1/registry", {"after": after, "limit": LIST_PAGE}, headers)
        if body is None:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
            raise LedgerError("GET /v1/registry did not return {entries: [...], next}")
        for item in body["entries"]:
            try:
                index, entry = int(item["index"]), item["entry"]
                leaf = merkle.leaf_hash(canonical_json(entry))
                tag, payload = str(item["log_tag_id"]), entry.get("payload")
            except (AttributeError, KeyError, TypeError, ValueError, FormatError) as exc:
                raise LedgerError(f"GET /v1/registry served a malformed entry: {exc}") from exc
            entries.append(RegistryEntry(index=index, payload=payload))
            if tag != log_tag_id(leaf):
                findings.append(Finding("entry", index, f"does not hash to its log tag id {tag}"))
            elif root is not None and index < tree_size:
                try:
                    proof = source.inclusion_proof(index, tree_size)
                    if proof is None:
                        raise VerificationError("inclusion", "the gateway serves no proof")
                    merkle.verify_inclusion(leaf, index, tree_size, proof, root)
                except VerificationError as exc:
                    message = f"is a registry entry not in the audited tree of {tree_size}: {exc}"
                    findings.append(Finding("entry", index, message))
        if body.get("next") is None:
            return entries, findings
        after = int(body["next"])
