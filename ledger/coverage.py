"""Per-device coverage of minute aggregates: minutes present and expected, gaps, duplicates.

An HOA reads it in `patio audit --full`: between a device's first and last recorded minute
every minute is expected once (DESIGN.md: one `energy_minute` per device and minute).
Duplicate minutes are possible only in logs written before that rule (migration
0003_entry_minute); conflicts are the refused submissions kept as evidence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import orjson

from ledger.encoding import parse_rfc3339
from ledger.errors import FormatError

if TYPE_CHECKING:
    from ledger.log import Log

CONTRACT_PREFIX = "energy_minute@"
SHOWN = 5  # gaps and duplicate minutes listed per device in the summary (all in the JSON)


def _minute_text(number: int) -> str:
    return datetime.fromtimestamp(number * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class DeviceCoverage:
    """One device's minutes as the log holds them."""

    device_id: str
    first: str | None
    last: str | None
    present: int  # distinct minutes with an aggregate
    expected: int  # minutes from first to last, both included
    gaps: list[tuple[str, str]] = field(default_factory=list)  # missing minutes, inclusive
    duplicates: dict[str, int] = field(default_factory=dict)  # minute: entries, where > 1
    conflicts: dict[str, int] | None = None  # rule: refused submissions (None: not visible)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (in the audit report)."""
        return asdict(self) | {"gaps": [list(gap) for gap in self.gaps]}

    def line(self) -> str:
        """One line for a human, with the first few gaps and duplicates."""
        share = f" ({100 * self.present / self.expected:.1f}%)" if self.expected else ""
        text = f"  device {self.device_id}: {self.present}/{self.expected} minutes{share}"
        if self.first is not None:
            text += f" from {self.first} to {self.last}"
        text += f", {len(self.gaps)} gap(s)"
        if self.gaps:
            shown = ", ".join(a if a == b else f"{a}..{b}" for a, b in self.gaps[:SHOWN])
            text += f" [{shown}{', ...' if len(self.gaps) > SHOWN else ''}]"
        text += f", {len(self.duplicates)} duplicate minute(s)"
        if self.duplicates:
            shown = ", ".join(f"{m} x{n}" for m, n in list(self.duplicates.items())[:SHOWN])
            text += f" [{shown}{', ...' if len(self.duplicates) > SHOWN else ''}]"
        if self.conflicts is None:
            text += ", conflicts not visible from this source"
        else:
            total = sum(self.conflicts.values())
            rules = ", ".join(f"{rule} {n}" for rule, n in sorted(self.conflicts.items()))
            text += f", {total} conflict(s) kept" + (f" ({rules})" if rules else "")
        return text


class Coverage:
    """Collects the minutes of every device from entry bytes, in any order."""

    def __init__(self) -> None:
        self._minutes: dict[str, Counter[int]] = {}

    def add(self, entries: Iterable[bytes | Mapping[str, Any] | None]) -> None:
        """Count each energy_minute entry's (device, minute), given as its bytes or its JSON
        object; other entries are skipped."""
        for data in entries:
            try:
                entry = orjson.loads(data) if isinstance(data, bytes) else data
                if entry is None or not str(entry["contract"]).startswith(CONTRACT_PREFIX):
                    continue
                payload = entry["payload"]
                device, start = payload["device_id"], payload["start"]
                moment = parse_rfc3339(start, what="start", fraction=False)
            except (orjson.JSONDecodeError, KeyError, TypeError, FormatError):
                continue  # not an aggregate the rule names; the audit judges the entry itself
            if not isinstance(device, str):
                continue
            self._minutes.setdefault(device, Counter())[int(moment.timestamp()) // 60] += 1

    def report(self, conflicts: Mapping[str, Mapping[str, int]] | None) -> list[DeviceCoverage]:
        """Every device with aggregates or conflicts, by id; `conflicts` None: not known."""
        devices = sorted(set(self._minutes) | set(conflicts or {}))
        return [self._device(d, conflicts) for d in devices]

    def _device(
        self, device: str, conflicts: Mapping[str, Mapping[str, int]] | None
    ) -> DeviceCoverage:
        counts = self._minutes.get(device, Counter())
        minutes = sorted(counts)
        gaps = [
            (_minute_text(before + 1), _minute_text(after - 1))
            for before, after in pairwise(minutes)
            if after - before > 1
        ]
        return DeviceCoverage(
            device_id=device,
            first=_minute_text(minutes[0]) if minutes else None,
            last=_minute_text(minutes[-1]) if minutes else None,
            present=len(minutes),
            expected=minutes[-1] - minutes[0] + 1 if minutes else 0,
            gaps=gaps,
            duplicates={_minute_text(m): counts[m] for m in minutes if counts[m] > 1},
            conflicts=None if conflicts is None else dict(conflicts.get(device, {})),
        )


def recorded_conflicts(log: Log) -> dict[str, dict[str, int]]:
    """Refused submissions kept as evidence, counted per device and rule."""
    from sqlalchemy import func, select

    from ledger.storage import conflicts

    query = select(conflicts.c.device_id, conflicts.c.rule, func.count()).group_by(
        conflicts.c.device_id, conflicts.c.rule
    )
    found: dict[str, dict[str, int]] = {}
    with log.engine.connect() as conn:
        for device, rule, count in conn.execute(query):
            found.setdefault(str(device), {})[str(rule)] = int(count)
    return found
