"""`patio report verify`: recompute a report from the log up to its checkpoint, compare.

The log is replayed with the auditor's machinery (ledger/audit.py): the report's checkpoint
note must verify with the pinned log key, every entry below its tree size must be there,
in order, with a good signature, and the tree they build must have the signed root. The
registry entries among them give the inputs (contracts/energy/provenance.py); each energy
entry's signing key must be one the registry gave its device. The community's
`energy_minute@1` entries are folded into hourly rollups (contracts/energy/minute.py) and
the report is rebuilt (contracts/energy/report.py) and compared field by field.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from contracts.energy.errors import EnergyError
from contracts.energy.minute import (
    CONTRACT,
    HourKey,
    HourTotals,
    add_entry,
    hourly_rollup,
)
from contracts.energy.provenance import (
    PROVENANCE_FORMAT,
    RollupLine,
    community_inputs,
    day_digest,
    entries_digest,
    local_days,
    period_from_json,
)
from contracts.energy.report import build_report, rollup_ranges
from ledger import merkle
from ledger.audit import Auditor, SourceCheckpoint, SourceEntry, SourceError
from ledger.bundle import leaf_hash_of_tag, log_tag_id
from ledger.cli import EXIT_OK
from ledger.encoding import canonical_json
from ledger.errors import FormatError, LedgerError, VerificationError
from ledger.note import Checkpoint, NoteVerifier
from ledger.registry_replay import REGISTRY_CONTRACT, RegistryEntry, replay


@dataclass(frozen=True)
class _Seen:
    index: int
    entry: dict[str, Any]
    device_keys: Sequence[str]


class ReportSource:
    """An audit source with one checkpoint, the report's, that keeps the entries it serves."""

    def __init__(self, note: str, inner: Any | None, export: list[SourceEntry] | None) -> None:
        self.note = note
        self.inner = inner
        self.export = export
        self.seen: list[_Seen] = []
        self.description = inner.description if inner is not None else "an export file"

    def checkpoints(self, *, after: int) -> Iterator[SourceCheckpoint]:
        """Only the report's checkpoint."""
        yield SourceCheckpoint(note=self.note)

    def latest_checkpoint(self) -> str | None:
        """None: the report's checkpoint is the one audited."""
        return None

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """Never needed with one checkpoint."""
        raise SourceError("no consistency proofs for a single checkpoint")

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes] | None:
        """From the gateway (to name a changed entry); none offline."""
        return None if self.inner is None else self.inner.inclusion_proof(index, tree_size)

    def entries(self, *, start: int, end: int) -> Iterator[Sequence[SourceEntry]]:
        """The entries in [start, end), remembered as they pass."""
        if self.inner is not None:
            pages: Iterator[Sequence[SourceEntry]] = self.inner.entries(start=start, end=end)
        else:
            assert self.export is not None
            pages = iter([[e for e in self.export if start <= e.index < end]])
        for page in pages:
            self.seen += [
                _Seen(e.index, dict(e.obj or {}), e.device_keys) for e in page if e.obj is not None
            ]
            yield page


def read_export(path: Path) -> list[SourceEntry]:
    """The entries of a saved `GET /v1/export` body ({"entries": [...]}, pages joined)."""
    try:
        body = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read the export {path}: {exc}") from exc
    items = body.get("entries") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise FormatError(f"{path} is not a GET /v1/export body ({{entries: [...]}})")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("index"), int):
            raise FormatError(f"{path} has an entry without an index")
        key, tag, entry = item.get("device_key"), item.get("log_tag_id"), item.get("entry")
        try:
            leaf = leaf_hash_of_tag(tag) if isinstance(tag, str) else None
        except FormatError:
            leaf = None
        out.append(
            SourceEntry(
                index=item["index"],
                obj=entry if isinstance(entry, dict) else {},
                device_keys=(key,) if isinstance(key, str) else (),
                leaf_hash=leaf,
            )
        )
    return sorted(out, key=lambda e: e.index)


def first_difference(claimed: Any, recomputed: Any, path: str = "") -> str | None:
    """The first path where two JSON values differ, with both values; None when equal."""
    if isinstance(claimed, dict) and isinstance(recomputed, dict):
        for key in list(recomputed) + [k for k in claimed if k not in recomputed]:
            where = f"{path}.{key}" if path else str(key)
            if key not in claimed:
                return f"{where}: missing from the report"
            if key not in recomputed:
                return f"{where}: in the report, not in the recomputation"
            found = first_difference(claimed[key], recomputed[key], where)
            if found:
                return found
        return None
    if isinstance(claimed, list) and isinstance(recomputed, list):
        for i, (a, b) in enumerate(zip(claimed, recomputed, strict=False)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(claimed) != len(recomputed):
            return f"{path}: {len(claimed)} items in the report, {len(recomputed)} from the log"
        return None
    if claimed != recomputed or type(claimed) is not type(recomputed):
        return f"{path}: the report says {claimed!r}, the log gives {recomputed!r}"
    return None


def _label(report: dict[str, Any], where: str) -> str:
    """Name a bucket by its start when the path is inside one."""
    for prefix in ("buckets[", "devices["):
        if where.startswith(prefix):
            index = int(where[len(prefix) : where.index("]")])
            rows = report.get(prefix[:-1]) or []
            if prefix == "buckets[" and index < len(rows) and isinstance(rows[index], dict):
                return f"bucket {rows[index].get('start')} ({where})"
    return where


def recompute(report: dict[str, Any], seen: list[_Seen], checkpoint: Checkpoint) -> dict[str, Any]:
    """The report rebuilt from the entries below the checkpoint's tree size."""
    provenance = report["provenance"]
    community_id = provenance["inputs"]["community_id"]
    tree_size = checkpoint.tree_size
    below = [s for s in seen if s.index < tree_size]
    registry, findings = replay(
        RegistryEntry(index=s.index, payload=s.entry.get("payload"))
        for s in below
        if s.entry.get("contract") == REGISTRY_CONTRACT
    )
    if findings:
        kind, subject, message = findings[0]
        raise VerificationError("report", f"{kind} {subject} {message}")
    inputs = community_inputs(registry, community_id)
    if inputs is None:
        raise VerificationError("report", f"no community {community_id!r} in the log")
    period = period_from_json(report["period"])
    ranges = rollup_ranges(period, inputs.tariff)
    totals: dict[HourKey, HourTotals] = {}
    for item in sorted(below, key=lambda seen: seen.index):  # log order: the chains follow it
        payload = item.entry.get("payload")
        if item.entry.get("contract") != CONTRACT or not isinstance(payload, dict):
            continue
        device = payload.get("device_id")
        if device not in inputs.devices:
            continue
        state = registry.devices[device]
        if not set(item.device_keys) & set(state.keys):
            raise VerificationError(
                "report",
                f"entry {item.index} is signed with a key the registry never gave {device!r}",
            )
        tag = log_tag_id(merkle.leaf_hash(canonical_json(item.entry))).encode()
        add_entry(totals, item.index, device, payload, tag)
    rollups = [hourly_rollup(key, totals[key]) for key in sorted(totals)]
    as_of = datetime.fromisoformat(report["as_of"].replace("Z", "+00:00"))
    rebuilt = build_report(
        rollups=rollups,
        roles=inputs.roles,
        period=period,
        tariff=inputs.tariff,
        contracted_kw=inputs.contracted_kw,
        as_of=as_of,
    )
    days = local_days(ranges, period.zone)
    starts = [start for start, _ in days]
    lines: dict[int, list[RollupLine]] = {}
    for rollup in rollups:
        hour = int(rollup.hour.timestamp())
        day = bisect.bisect_right(starts, hour) - 1
        if day >= 0 and hour < days[day][1]:
            lines.setdefault(day, []).append(
                (hour, rollup.device_id, rollup.sensor, rollup.entries, rollup.chain)
            )
    entries = entries_digest(
        (start, end, day_digest(lines.get(day, []))) for day, (start, end) in enumerate(days)
    )
    rebuilt["provenance"] = {
        "format": PROVENANCE_FORMAT,
        "checkpoint": provenance["checkpoint"],
        "tree_size": tree_size,
        "root_hash": checkpoint.root_hash.hex(),
        "entries": entries,
        "inputs": inputs.json(),
        "payloads_removed": None,  # verify() refuses a report that claims any
    }
    return rebuilt


def verify(
    report_path: Path, *, log_key: str, gateway: str | None, api_key: str | None,
    export: Path | None,
) -> str:  # fmt: skip
    """Verify a report: the summary line; VerificationError (exit 1) naming what differs,
    FormatError (exit 2) for unusable input."""
    try:
        report = json.loads(report_path.read_bytes())
        note = report["provenance"]["checkpoint"]
        if not isinstance(note, str) or "community_id" not in report["provenance"]["inputs"]:
            raise TypeError("the checkpoint is not a note")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{report_path} is not a patio report with provenance: {exc}") from exc
    if report["provenance"].get("format") != PROVENANCE_FORMAT:
        raise FormatError(
            f"{report_path} has provenance {report['provenance'].get('format')!r}; this "
            f"command verifies {PROVENANCE_FORMAT} only"
        )
    if report["provenance"].get("payloads_removed") is not None:
        # Those minutes count through rollups the log can no longer rebuild (retention).
        raise FormatError(
            f"{report_path} counts minutes whose payloads were removed "
            f"({report['provenance']['payloads_removed']}): it cannot be recomputed from the log"
        )
    try:
        verifier = NoteVerifier.parse(log_key)
    except (FormatError, LedgerError) as exc:
        raise FormatError(f"unusable log key: {exc}") from exc
    inner = None
    if gateway is not None:
        from ledger.audit_gateway import GatewaySource

        inner = GatewaySource(gateway, api_key=api_key)
    source = ReportSource(note, inner, read_export(export) if export is not None else None)
    try:
        audit = Auditor(source=source, log_key=str(verifier), workers=1).run(full=True)
    except SourceError as exc:
        raise FormatError(f"cannot read the log: {exc}") from exc
    if audit.report.findings:
        raise VerificationError("log", audit.report.findings[0].line())
    checkpoint = Checkpoint.open(note, verifier)
    try:
        rebuilt = recompute(report, source.seen, checkpoint)
    except (EnergyError, KeyError, TypeError, ValueError) as exc:
        raise VerificationError("report", f"the report cannot be recomputed: {exc}") from exc
    difference = first_difference(report, rebuilt)
    if difference is not None:
        raise VerificationError("report", f"differs at {_label(report, difference)}")
    return (
        f"report verified: {len(rebuilt['buckets'])} buckets equal the log up to checkpoint "
        f"{checkpoint.tree_size} ({audit.report.entries_checked} entries checked)"
    )


__all__ = ["EXIT_OK", "ReportSource", "first_difference", "read_export", "recompute", "verify"]
