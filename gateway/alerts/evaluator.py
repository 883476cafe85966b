"""The alert evaluator: follows the log by index after commit, runs each community's rules on
the readings' minutes, and keeps the outbox of notifications.

It never runs in the writer's transaction: it reads committed entries, computes outside any
write lock, then writes its state, events, deliveries and position in one short transaction
(optimistic: if another gateway process moved the position meanwhile, this pass is dropped
and that one's stands). Its position and every rule's state are in the database, so a
restart resumes where it stopped. The wall clock (injectable: `clock`) is only used for
silence, lateness, repeats, quiet hours and retries.
"""

from __future__ import annotations

import json
import logging
import time
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Annotated, Any, NamedTuple, Optional

import msgspec
import orjson
from pydantic import Field, StringConstraints
from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from contracts.alert import AlertRecord
from gateway.alerts.channels import Channel, DeliveryError, Sender, recipients
from gateway.alerts.rules import (
    MINUTE,
    Change,
    Reading,
    Readings,
    Rule,
    RuleSpec,
    Silence,
    State,
    Strict,
    on_clock,
    on_readings,
    reading_of,
    sensors_of,
    subject_of,
)
from gateway.alerts.tables import (
    alert_deliveries,
    alert_events,
    alert_progress,
    alert_rules,
    alert_settings,
    alert_silences,
    alert_states,
)
from gateway.metrics import Metrics
from gateway.store import communities
from ledger.encoding import parse_rfc3339, rfc3339_utc
from ledger.errors import FormatError
from ledger.storage import DriverCursor

Clock = Callable[[], int]  # Unix seconds
Recorder = Callable[[AlertRecord], str]  # appends the record, answers its log tag id
# A pass's entries of one device: per sensor the rules look at, the column of its Readings.
ReadingsDecoder = Callable[[Sequence[bytes]], list[list["Reading | None"]]]
BATCH = 20_000  # log indices read per pass (a backlog: 5 s at 4,000 a second)
MEMO = 100_000  # entries in each memo of parsed texts before it starts over
MINUTE_CONTRACT = "energy_minute@1"
# The log's energy_minute entries in an index range (by the primary key: a filter on the
# device would let the planner walk each device's whole history), with the payload only for
# the devices of communities with rules; dropped payloads (NULL) left out.
READ_ENTRIES = (
    "SELECT idx, device_id, CASE WHEN device_id IN (SELECT devices.id FROM devices JOIN "
    "alert_rules ON alert_rules.community_id = devices.community_id) THEN entry END, "
    "received_at, minute FROM entries "
    "WHERE idx > ? AND idx <= ? AND contract = ? AND entry IS NOT NULL ORDER BY idx"
)
EVENT_COLUMNS = (
    ("community_id", "text"),
    ("rule_id", "integer"),
    ("subject", "text"),
    ("state", "text"),
    ("minute", "bigint"),
    ("detected_at", "bigint"),
    ("late", "boolean"),
    ("notified", "text"),
    ("detail", "text"),
)
STATE_COLUMNS = (
    ("rule_id", "integer"),
    ("subject", "text"),
    ("community_id", "text"),
    ("state", "text"),
    ("since", "bigint"),
    ("last_notified", "bigint"),
    ("acked_by", "text"),
    ("data", "text"),
)
UPSERT_STATES = (
    " ON CONFLICT (rule_id, subject) DO UPDATE SET community_id = excluded.community_id, "
    "state = excluded.state, since = excluded.since, "
    "last_notified = excluded.last_notified, acked_by = excluded.acked_by, "
    "data = excluded.data"
)
READ_STATES = (
    "SELECT rule_id, subject, state, since, last_notified, acked_by, data FROM alert_states"
)
READ_STATE_ROWS = "SELECT rule_id, subject, state, acked_by FROM alert_states"
# Read every pass through the driver: SQLAlchemy spent more on each than the database.
READ_DEVICES = "SELECT id, community_id, profile, created_at, revoked_at FROM devices"
READ_RULES = "SELECT id, community_id, spec, from_idx FROM alert_rules ORDER BY id"
# A delivery to attempt, to put on the log, or whose attempt may have lapsed.
OUTBOX_OPEN = (
    "SELECT 1 FROM alert_deliveries WHERE status IN ('pending', 'sending') "
    "OR (status = 'sent' AND log_tag_id IS NULL) LIMIT 1"
)
MAX_ATTEMPTS = 20  # then the delivery is marked failed (visible in the API)
MAX_BACKOFF = 3600
# An attempt not finished after this long is unconfirmed (the channel's timeouts are 10 s).
CLAIM_SECONDS = 120
UNFINISHED = (
    "the attempt never finished (the gateway stopped while sending): it may or may not have "
    "been delivered, and is not sent again (at most once)"
)
log = logging.getLogger(__name__)
HourMinute = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class AlertError(Exception):
    """A request on alerts that cannot be done; `status` is its HTTP status."""

    def __init__(self, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.status = status


class QuietHours(Strict):
    """Local times (the community's time zone) when only urgent rules notify; the rest wait
    until the end. `start` after `end` spans midnight."""

    start: HourMinute
    end: HourMinute


class AlertSettings(Strict):
    """A community's notification policy."""

    channels: list[Channel] = Field(default_factory=list, max_length=20)
    repeat_minutes: int = Field(default=240, ge=0, le=10080)  # 0: never repeat
    quiet_hours: QuietHours | None = None
    # A state change whose minute is older than this when detected is marked late.
    late_after_minutes: int = Field(default=10, ge=1, le=1440)


def wall_clock() -> int:
    """The current Unix time in seconds."""
    return int(time.time())


def iso(seconds: int) -> str:
    """Unix seconds as RFC 3339 UTC."""
    return rfc3339_utc(datetime.fromtimestamp(seconds, UTC)).replace(".000Z", "Z")


def quiet_until(quiet: QuietHours, time_zone: str, now: int) -> int | None:
    """The end of the quiet hours `now` falls in (Unix seconds), or None outside them."""
    local = datetime.fromtimestamp(now, zoneinfo.ZoneInfo(time_zone))
    start = tuple(int(part) for part in quiet.start.split(":"))
    end = tuple(int(part) for part in quiet.end.split(":"))
    here = (local.hour, local.minute)
    inside = start <= here < end if start <= end else (here >= start or here < end)
    if not inside:
        return None
    until = local.replace(hour=end[0], minute=end[1], second=0, microsecond=0)
    if until <= local:
        until += timedelta(days=1)
    return int(until.timestamp())


def backoff(attempts: int, base: float) -> int:
    """Seconds before retry number `attempts` (1, 2, ...): doubling, capped."""
    return int(min(MAX_BACKOFF, base * 2 ** (attempts - 1)))


class Times(dict[str | None, int | None]):
    """RFC 3339 times as Unix seconds (None: not one), memoised across passes: a device's
    minutes recur in every rule's state, a batch's entries share an arrival."""

    def __missing__(self, text: str | None) -> int | None:
        try:
            value = minute_seconds(text) if text is not None else None
        except FormatError:
            value = None
        if len(self) >= MEMO:
            self.clear()
        self[text] = value
        return value


class Device(NamedTuple):
    """A device's row as a pass reads it."""

    id: str
    community_id: str
    profile: str | None
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a pass does with one device's readings while its row and the rules stay the
    same: the (rule, subject) pairs watching it and the sensors they read."""

    device: Device | None  # its row as read (None: unknown)
    rules: list[tuple[Rule, str]]
    sensors: tuple[str, ...]
    profile: dict[str, Any] | None


@dataclass(kw_only=True)
class Held:
    """The states as this process last wrote them, at log index `through`, and of each row
    in the database its state and acknowledgment: while the table still holds exactly those
    (no acknowledgment, no rule replaced or deleted since), the next pass starts from these
    states instead of reading and parsing every row again."""

    through: int
    states: dict[tuple[int, str], State]
    rows: dict[tuple[int, str], tuple[str, str | None]]


@dataclass
class Pass:
    """What one evaluation pass has worked out, before it is written."""

    now: int
    states: dict[tuple[int, str], State]
    loaded: dict[tuple[int, str], str]  # the state each row had when read
    changes: list[Change] = field(default_factory=list)


class Evaluator:
    """Evaluates rules after commit and delivers what they notify."""

    def __init__(
        self,
        engine: Engine,
        *,
        sender: Sender,
        recorder: Recorder,
        clock: Clock = wall_clock,
        metrics: Metrics | None = None,
        retry_base: float = 30.0,
        claim_seconds: int = CLAIM_SECONDS,
        batch: int = BATCH,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.recorder = recorder
        self.clock = clock
        self.metrics = metrics
        self.retry_base = retry_base
        self.claim_seconds = claim_seconds
        self.batch = batch
        self._specs: dict[str, RuleSpec] = {}  # by their stored JSON
        self._profiles: dict[str, Any] = {}  # devices' declared sensors, by their stored JSON
        self._times = Times()  # RFC 3339 texts as Unix seconds
        self._decoders: dict[tuple[str, ...], ReadingsDecoder] = {}  # by the sensors
        self._plans: dict[str, Plan] = {}  # by device, for `_plan_rules`
        self._plan_rules: list[Rule] = []
        self._held: Held | None = None

    def _write(self) -> Connection:
        return self.engine.connect().execution_options(patio_write=True)

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self) -> int:
        """One pass over the entries committed since the last: the number of log indices
        it went past (the energy_minute entries of devices no rule concerns are not read)."""
        started, cpu = time.perf_counter(), time.thread_time()
        now = self.clock()
        with self.engine.connect() as conn:
            through: int | None = conn.execute(select(alert_progress.c.through_idx)).scalar_one()
            if through is None:  # first start: from where the oldest rule began, else the end
                starts = [rule.from_idx for rule in self._rules(conn) if rule.from_idx]
                first = min(starts) if starts else log_end(conn)
                return self._advance(None, first - 1)
            end = log_end(conn) - 1
            upto = min(end, through + self.batch)
            rules = self._rules(conn)
            if not rules:  # nothing to judge: straight to the end
                if end > through:
                    self._advance(through, end)
                self._measure(end - through, 0, started, cpu)
                return 0
            cursor = DriverCursor(conn, binary=True)
            rows = [*cursor.execute(READ_ENTRIES, (through, upto, MINUTE_CONTRACT)).fetchall()]
            rows.sort(key=itemgetter(1))  # by device, each in log order (the sort is stable)
            states, held = self._states(cursor, through)
            work = Pass(now=now, states=states, loaded={})
            work.loaded = {key: state.state for key, state in states.items()}
            known = {row[0]: Device._make(row) for row in cursor.execute(READ_DEVICES).fetchall()}
        by_community: dict[str, list[Rule]] = defaultdict(list)
        for rule in rules:
            by_community[rule.community_id].append(rule)
        if rules != self._plan_rules:
            self._plans, self._plan_rules = {}, rules
        self._judge(rows, known, by_community, work)
        if upto == end:  # caught up with the log: the clock may speak
            self._silences(known, by_community, work)
        with self._write() as conn, conn.begin():
            current = conn.execute(
                select(alert_progress.c.through_idx).with_for_update()
            ).scalar_one()
            if current != through:  # another process evaluated these entries
                return 0
            written = self._persist(conn, work)
            if upto > through:
                conn.execute(update(alert_progress).values(through_idx=upto))
        for key, state in written.items():
            held[key] = (state.state, state.acked_by)
            state.dirty = False
        self._held = Held(through=upto, states=work.states, rows=held)
        self._measure(upto - through, end - upto, started, cpu)
        if self.metrics is not None:
            for name, count in Counter(change.state for change in work.changes).items():
                self.metrics.alert_changes.labels(name).inc(count)
        return upto - through

    def _states(
        self, cursor: DriverCursor, through: int
    ) -> tuple[dict[tuple[int, str], State], dict[tuple[int, str], tuple[str, str | None]]]:
        """Every (rule, subject)'s state at log index `through`, and each row's state and
        acknowledgment as read: those this process holds (Held) when they are still what
        the table says, else read again."""
        held, self._held = self._held, None  # until this pass is written
        if held is not None and held.through == through:
            rows = {
                (rule_id, subject): (name, acked_by)
                for rule_id, subject, name, acked_by in cursor.execute(READ_STATE_ROWS).fetchall()
            }
            if rows == held.rows:
                return held.states, rows
        states, rows = {}, {}
        for rule_id, subject, *values in cursor.execute(READ_STATES).fetchall():
            states[(rule_id, subject)] = State(
                state=values[0],
                since=values[1],
                last_notified=values[2],
                acked_by=values[3],
                data=orjson.loads(values[4]),
            )
            rows[(rule_id, subject)] = (values[0], values[3])
        return states, rows

    def _measure(self, read: int, behind: int, started: float, cpu: float) -> None:
        if self.metrics is not None:
            self.metrics.alert_entries.inc(read)
            self.metrics.alert_behind.set(behind)
            self.metrics.alert_evaluation.observe(time.perf_counter() - started)
            self.metrics.alert_cpu.inc(time.thread_time() - cpu)

    def _advance(self, through: int | None, to: int) -> int:
        with self._write() as conn, conn.begin():
            conn.execute(
                update(alert_progress)
                .where(
                    alert_progress.c.through_idx.is_(None)
                    if through is None
                    else alert_progress.c.through_idx == through
                )
                .values(through_idx=to)
            )
        return 0

    def _rules(self, conn: Connection) -> list[Rule]:
        rules = []
        for rule_id, community_id, text, from_idx in (
            DriverCursor(conn).execute(READ_RULES).fetchall()
        ):
            spec = self._specs.get(text)
            if spec is None:  # parsed once per process, not on every pass
                spec = self._specs[text] = RuleSpec.model_validate_json(text)
            if spec.enabled:
                rules.append(
                    Rule(id=rule_id, community_id=community_id, spec=spec, from_idx=from_idx or 0)
                )
        return rules

    def _watching(
        self,
        device_id: str,
        known: dict[str, Device],
        by_community: dict[str, list[Rule]],
        work: Pass,
    ) -> tuple[dict[str, Any] | None, list[tuple[Rule, State, str]], tuple[str, ...]]:
        """A device's declared profile, the rules watching it with their states and subjects,
        and the readings those rules look at (worked out once per device and set of rules)."""
        device = known.get(device_id)
        plan = self._plans.get(device_id)
        if plan is None or plan.device != device:
            plan = self._plans[device_id] = self._plan(device_id, device, by_community)
        states = work.states
        watching = []
        for rule, subject in plan.rules:
            key = (rule.id, subject)
            state = states.get(key)
            if state is None:
                state = states[key] = State()
            watching.append((rule, state, subject))
        return plan.profile, watching, plan.sensors

    def _plan(
        self, device_id: str, device: Device | None, by_community: dict[str, list[Rule]]
    ) -> Plan:
        rules = []
        sensors: dict[str, None] = {}
        for rule in [] if device is None else by_community.get(device.community_id, []):
            if rule.watches(device_id):
                rules.append((rule, subject_of(rule, device_id)))
                sensors.update(dict.fromkeys(sensors_of(rule.spec.condition)))
        profile = None
        if device is not None and device.profile:
            profile = self._profiles.get(device.profile)
            if profile is None:
                if len(self._profiles) >= MEMO:
                    self._profiles.clear()
                profile = self._profiles[device.profile] = orjson.loads(device.profile)
        return Plan(device=device, rules=rules, sensors=tuple(sensors), profile=profile)

    def _decoder(self, sensors: tuple[str, ...]) -> ReadingsDecoder:
        decoder = self._decoders.get(sensors)
        if decoder is None:
            decoder = self._decoders[sensors] = readings_decoder(sensors)
        return decoder

    def _judge(
        self,
        rows: Sequence[Any],
        known: dict[str, Device],
        by_community: dict[str, list[Rule]],
        work: Pass,
    ) -> None:
        """Run the rules over the rows (idx, device_id, entry, received_at, minute), sorted
        by device then index (entry None: no rule for the device): one device's readings at
        a time, as columns, each rule over them in one call, keeping of each payload only
        the readings the rules look at."""
        changes: list[Change] = []
        times = self._times
        for device_id, device_rows in groupby(rows, key=itemgetter(1)):
            profile, watching, sensors = self._watching(device_id, known, by_community, work)
            if not watching:
                continue
            # As columns, in C: this runs once per entry.
            idxs, _, texts, received, minute_texts = zip(*device_rows, strict=True)
            minutes: list[Any] = [*map(times.__getitem__, minute_texts)]
            arrivals: list[Any] = [*map(times.__getitem__, received)]
            if None in minutes or None in arrivals:  # not a reading the contract accepts today
                kept = [
                    n
                    for n, pair in enumerate(zip(minutes, arrivals, strict=True))
                    if None not in pair
                ]
                if not kept:
                    continue
                idxs, texts = tuple(idxs[n] for n in kept), tuple(texts[n] for n in kept)
                minutes, arrivals = [minutes[n] for n in kept], [arrivals[n] for n in kept]
            columns = self._decoder(sensors)(texts) if sensors else []
            readings = Readings(
                idx=idxs,
                minute=minutes,
                arrival=arrivals,
                sensors=dict(zip(sensors, columns, strict=True)),
            )
            for rule, state, subject in watching:
                judged = readings
                if rule.from_idx > idxs[0]:  # history from before the rule
                    judged = readings.take(
                        [n for n, idx in enumerate(idxs) if idx >= rule.from_idx]
                    )
                changes += on_readings(rule, judged, state, subject, profile)
        # In log order, as a reading at a time would have made them (the sort is stable).
        changes.sort(key=attrgetter("idx"))
        work.changes += changes

    def _silences(
        self, known: dict[str, Device], by_community: dict[str, list[Rule]], work: Pass
    ) -> None:
        silence_rules = {
            community_id: found
            for community_id, rules in by_community.items()
            if (found := [(r, c) for r in rules if isinstance(c := r.spec.condition, Silence)])
        }
        for device in known.values():
            if device.revoked_at is not None:
                continue
            for rule, condition in silence_rules.get(device.community_id, ()):
                if not rule.watches(device.id):
                    continue
                registered = self._times[device.created_at]
                if registered is None:
                    registered = minute_seconds(device.created_at)  # raises its FormatError
                state = work.states.setdefault((rule.id, device.id), State())
                work.changes += on_clock(rule, condition, device.id, registered, state, work.now)

    def _persist(self, conn: Connection, work: Pass) -> dict[tuple[int, str], State]:
        """Write the pass's events, deliveries and states; the states written."""
        settings = _settings(conn)
        zones = dict(conn.execute(select(communities.c.id, communities.c.time_zone)).all())
        silences = conn.execute(select(alert_silences).where(alert_silences.c.ends_at > 0)).all()
        items: dict[str, list[dict[str, Any]]] = defaultdict(list)
        events = []
        default = AlertSettings()
        for change in work.changes:
            policy = settings.get(change.rule.community_id, default)
            late = work.now - (change.minute + MINUTE) > policy.late_after_minutes * MINUTE
            if not change.notify:
                notified = "suppressed" if change.state == "firing" else "none"
            elif silences and any(_matches(silence, change) for silence in silences):
                notified = "silenced"
            elif not policy.channels:
                notified = "no_channel"
            else:
                notified = "queued"
                items[change.rule.community_id].append(_item(change, late=late))
                work.states[(change.rule.id, change.subject)].last_notified = work.now
            events.append(
                (
                    change.rule.community_id,
                    change.rule.id,
                    change.subject,
                    change.state,
                    change.minute,
                    work.now,
                    late,
                    notified,
                    change.detail,
                )
            )
        self._repeats(conn, work, settings, items)
        if events:
            insert_rows(conn, "alert_events", EVENT_COLUMNS, events)
        for community_id, grouped in items.items():
            policy = settings.get(community_id, AlertSettings())
            enqueue(conn, community_id, grouped, policy, zones.get(community_id, "UTC"), work.now)
        return self._write_states(conn, work)

    def _repeats(
        self,
        conn: Connection,
        work: Pass,
        settings: dict[str, AlertSettings],
        items: dict[str, list[dict[str, Any]]],
    ) -> None:
        """Firing alerts nobody acknowledged, notified again every `repeat_minutes`."""
        rules = {rule.id: rule for rule in self._rules(conn)}
        for (rule_id, subject), state in work.states.items():
            if state.state != "firing" or state.last_notified is None:
                continue
            rule = rules.get(rule_id)
            if rule is None:
                continue
            policy = settings.get(rule.community_id, AlertSettings())
            if not policy.repeat_minutes or not policy.channels:
                continue
            if work.now - state.last_notified < policy.repeat_minutes * MINUTE:
                continue
            item = {
                "rule_id": rule.id,
                "rule": rule.spec.name,
                "subject": subject,
                "state": "firing",
                "minute": iso(state.since or 0),
                "late": False,
                "detail": "still firing (repeat)",
                "urgent": rule.spec.urgent,
            }
            items[rule.community_id].append(item)
            state.last_notified, state.dirty = work.now, True

    def _write_states(self, conn: Connection, work: Pass) -> dict[tuple[int, str], State]:
        """Every state this pass changed, in two statements (a pass touches most of them:
        each reading moves its subjects' last minute)."""
        dirty = {key: state for key, state in work.states.items() if state.dirty}
        if not dirty:
            return {}
        rules = dict(conn.execute(select(alert_rules.c.id, alert_rules.c.community_id)).all())
        acked = {
            (row.rule_id, row.subject): row.acked_by
            for row in conn.execute(
                select(
                    alert_states.c.rule_id, alert_states.c.subject, alert_states.c.acked_by
                ).where(alert_states.c.state == "acknowledged")
            )
        }
        rows, written = [], {}
        for key, state in dirty.items():
            if key[0] not in rules:
                continue  # the rule was deleted meanwhile
            written[key] = state
            if key in acked and state.state == "firing" and work.loaded.get(key) == "firing":
                # Acknowledged while this pass ran: keep the acknowledgment.
                state.state, state.acked_by = "acknowledged", acked[key]
            rows.append(
                (
                    key[0],
                    key[1],
                    rules[key[0]],
                    state.state,
                    state.since,
                    state.last_notified,
                    state.acked_by,
                    orjson.dumps(state.data).decode(),
                )
            )
        if not rows:
            return written
        insert_rows(conn, "alert_states", STATE_COLUMNS, rows, UPSERT_STATES)
        return written

    # -- acknowledgment -------------------------------------------------------------------

    def acknowledge(self, community_id: str, rule_id: int, subject: str, by: str) -> None:
        """Acknowledge a firing alert: no more repeats; the channels are told who took it."""
        now = self.clock()
        with self._write() as conn, conn.begin():
            row = conn.execute(
                select(alert_states, alert_rules.c.spec)
                .join(alert_rules, alert_rules.c.id == alert_states.c.rule_id)
                .where(
                    alert_states.c.community_id == community_id,
                    alert_states.c.rule_id == rule_id,
                    alert_states.c.subject == subject,
                )
                .with_for_update()
            ).first()
            if row is None:
                raise AlertError(f"no alert for rule {rule_id} and {subject!r}", status=404)
            if row.state != "firing":
                raise AlertError(f"the alert is {row.state}, not firing", status=409)
            conn.execute(
                update(alert_states)
                .where(alert_states.c.rule_id == rule_id, alert_states.c.subject == subject)
                .values(state="acknowledged", acked_by=by)
            )
            spec = RuleSpec.model_validate_json(row.spec)
            policy = _settings(conn).get(community_id, AlertSettings())
            notified = "queued" if policy.channels else "no_channel"
            detail = f"acknowledged by {by}"
            conn.execute(
                insert(alert_events).values(
                    community_id=community_id,
                    rule_id=rule_id,
                    subject=subject,
                    state="acknowledged",
                    minute=row.since or 0,
                    detected_at=now,
                    late=False,
                    notified=notified,
                    detail=detail,
                )
            )
            item = {
                "rule_id": rule_id,
                "rule": spec.name,
                "subject": subject,
                "state": "acknowledged",
                "minute": iso(row.since or 0),
                "late": False,
                "detail": detail,
                "urgent": spec.urgent,
            }
            zone = (
                conn.execute(
                    select(communities.c.time_zone).where(communities.c.id == community_id)
                ).scalar_one_or_none()
                or "UTC"
            )
            if policy.channels:
                enqueue(conn, community_id, [item], policy, zone, now)

    # -- delivery -------------------------------------------------------------------------

    def deliver(self, limit: int = 20) -> int:
        """Send the deliveries that are due; the number attempted.

        At most once (docs/alerts.md): each attempt is committed as `sending` before the
        channel is contacted, and one that never finished (the process stopped, or its
        lease of `claim_seconds` ran out) or that broke after the channel may have taken
        the message becomes `unconfirmed`, never sent again.
        """
        now, cpu = self.clock(), time.thread_time()
        with self.engine.connect() as conn:  # usually nothing: one statement, not five
            idle = DriverCursor(conn).scalar(OUTBOX_OPEN) is None
        if idle:
            if self.metrics is not None:
                self.metrics.alert_outbox.set(0)
                self.metrics.alert_cpu.inc(time.thread_time() - cpu)
            return 0
        self._unfinished(now)
        with self.engine.connect() as conn:
            due = conn.execute(
                select(alert_deliveries)
                .where(
                    alert_deliveries.c.status == "pending", alert_deliveries.c.next_attempt <= now
                )
                .order_by(alert_deliveries.c.id)
                .limit(limit)
            ).all()
            unrecorded = (
                conn.execute(
                    select(alert_deliveries.c.id).where(
                        alert_deliveries.c.status == "sent", alert_deliveries.c.log_tag_id.is_(None)
                    )
                )
                .scalars()
                .all()
            )
        for delivery_id in unrecorded:
            self._record(delivery_id)
        attempted = 0
        for row in due:
            with self._write() as conn, conn.begin():
                claimed = conn.execute(
                    update(alert_deliveries)
                    .where(
                        alert_deliveries.c.id == row.id,
                        alert_deliveries.c.status == "pending",
                        alert_deliveries.c.next_attempt == row.next_attempt,
                    )
                    .values(
                        status="sending",
                        attempts=row.attempts + 1,
                        next_attempt=now + self.claim_seconds,
                    )
                ).rowcount
            if not claimed:
                continue  # another process has it
            attempted += 1
            self._attempt(row)
        if self.metrics is not None:
            with self.engine.connect() as conn:
                pending = conn.execute(
                    select(func.count()).where(alert_deliveries.c.status == "pending")
                ).scalar_one()
            self.metrics.alert_outbox.set(pending)
            self.metrics.alert_cpu.inc(time.thread_time() - cpu)
        return attempted

    def _unfinished(self, now: int) -> None:
        """Attempts whose lease ran out without an outcome: unconfirmed, not sent again."""
        with self._write() as conn, conn.begin():
            channels = conn.execute(
                update(alert_deliveries)
                .where(
                    alert_deliveries.c.status == "sending",
                    alert_deliveries.c.next_attempt <= now,
                )
                .values(status="unconfirmed", last_error=UNFINISHED)
                .returning(alert_deliveries.c.id, alert_deliveries.c.channel)
            ).all()
        for delivery_id, channel in channels:
            log.warning("alert delivery %d on %s: %s", delivery_id, channel, UNFINISHED)
            if self.metrics is not None:
                self.metrics.alert_deliveries.labels(channel, "unconfirmed").inc()

    def _attempt(self, row: Any) -> None:
        attempts = row.attempts + 1
        try:
            self.sender.send(
                json.loads(row.target),
                row.recipient,
                json.loads(row.body),
                delivery_id=delivery_key(row.id, row.created_at),
            )
        except DeliveryError as exc:
            failed = attempts >= MAX_ATTEMPTS
            status = "unconfirmed" if exc.uncertain else "failed" if failed else "pending"
            with self._write() as conn, conn.begin():
                conn.execute(
                    update(alert_deliveries)
                    .where(alert_deliveries.c.id == row.id, alert_deliveries.c.status == "sending")
                    .values(
                        last_error=str(exc)[:1000],
                        status=status,
                        next_attempt=self.clock() + backoff(attempts, self.retry_base),
                    )
                )
            log.warning(
                "alert delivery %d on %s %s (attempt %d): %s",
                row.id,
                row.channel,
                "may or may not have gone out" if exc.uncertain else "failed",
                attempts,
                exc,
            )
            if self.metrics is not None:
                outcome = {"pending": "retry"}.get(status, status)
                self.metrics.alert_deliveries.labels(row.channel, outcome).inc()
            return
        with self._write() as conn, conn.begin():
            conn.execute(
                update(alert_deliveries)
                .where(
                    alert_deliveries.c.id == row.id,
                    # unconfirmed: its lease ran out while the channel took its time
                    alert_deliveries.c.status.in_(("sending", "unconfirmed")),
                )
                .values(status="sent", sent_at=iso(self.clock()), last_error=None)
            )
        if self.metrics is not None:
            self.metrics.alert_deliveries.labels(row.channel, "sent").inc()
        self._record(row.id)

    def _record(self, delivery_id: int) -> None:
        """Put a sent delivery on the log; left for the next pass if the writer is away."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(alert_deliveries).where(alert_deliveries.c.id == delivery_id)
            ).one()
        body = json.loads(row.body)
        record = AlertRecord(
            community_id=row.community_id,
            channel=row.channel,
            recipient=row.recipient,
            sent_at=row.sent_at,
            alerts=tuple(
                {
                    key: alert[key]
                    for key in ("rule_id", "rule", "subject", "state", "minute", "late")
                }
                for alert in body["alerts"]
            ),
        )
        try:
            tag = self.recorder(record)
        except Exception:  # the writer restarting: the next pass records it
            log.exception("recording alert delivery %d failed; retrying later", delivery_id)
            return
        with self._write() as conn, conn.begin():
            conn.execute(
                update(alert_deliveries)
                .where(alert_deliveries.c.id == delivery_id)
                .values(log_tag_id=tag)
            )


def log_end(conn: Connection) -> int:
    """The index the next entry appended will take."""
    end: int = DriverCursor(conn).scalar("SELECT coalesce(max(idx) + 1, 0) FROM entries")
    return end


def insert_rows(
    conn: Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    tail: str = "",
) -> None:
    """Insert `rows` (values in the order of `columns`, name and PostgreSQL type), in log
    order, then `tail` (an ON CONFLICT clause). Through the driver: SQLAlchemy's per-row
    handling cost more than the database's work. SQLite runs the statement per row in C;
    psycopg's executemany dumps each parameter in Python (about 100 us a row with the
    bench's 1,800 events a pass of 10,000 entries), so PostgreSQL takes them all as one JSON
    array (orjson, in C) and unpacks it in one statement, the rows' order kept."""
    names = ", ".join(name for name, _ in columns)
    cursor = DriverCursor(conn)
    if conn.dialect.name != "postgresql":
        marks = ", ".join("?" for _ in columns)
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}){tail}", rows)
        return
    values = ", ".join(f"(r ->> {n})::{kind}" for n, (_, kind) in enumerate(columns))
    cursor.execute(
        f"INSERT INTO {table} ({names}) SELECT {values} "
        f"FROM json_array_elements(?::json) WITH ORDINALITY AS t (r, n) ORDER BY n{tail}",
        (orjson.dumps(rows).decode(),),
    )


def delivery_key(delivery_id: int, created_at: int) -> str:
    """A delivery's id on the wire, the same on every attempt (Idempotency-Key, Message-ID)."""
    return f"{delivery_id}.{created_at}"


def _settings(conn: Connection) -> dict[str, AlertSettings]:
    return {
        row.community_id: AlertSettings.model_validate_json(row.spec)
        for row in conn.execute(select(alert_settings))
    }


def _matches(silence: Any, change: Change) -> bool:
    return (
        silence.community_id == change.rule.community_id
        and silence.starts_at <= change.minute < silence.ends_at
        and silence.rule_id in (None, change.rule.id)
        and silence.subject in (None, change.subject)
    )


def _item(change: Change, *, late: bool) -> dict[str, Any]:
    return {
        "rule_id": change.rule.id,
        "rule": change.rule.spec.name,
        "subject": change.subject,
        "state": change.state,
        "minute": iso(change.minute),
        "late": late,
        "detail": change.detail,
        "urgent": change.rule.spec.urgent,
    }


def enqueue(
    conn: Connection,
    community_id: str,
    items: Sequence[dict[str, Any]],
    policy: AlertSettings,
    time_zone: str,
    now: int,
) -> None:
    """One delivery per channel recipient holding every item (the community's group); held
    until the quiet hours end unless an item is urgent."""
    due = now
    if policy.quiet_hours is not None and not any(item["urgent"] for item in items):
        due = quiet_until(policy.quiet_hours, time_zone, now) or now
    body = json.dumps({"community_id": community_id, "created_at": iso(now), "alerts": list(items)})
    rows = [
        {
            "community_id": community_id,
            "channel": channel.type,
            "target": channel.model_dump_json(),
            "recipient": recipient,
            "body": body,
            "status": "pending",
            "attempts": 0,
            "next_attempt": due,
            "created_at": now,
        }
        for channel in policy.channels
        for recipient in recipients(channel)
    ]
    conn.execute(insert(alert_deliveries), rows)


def store_settings(conn: Connection, community_id: str, settings: AlertSettings) -> None:
    """Replace a community's alert settings."""
    conn.execute(delete(alert_settings).where(alert_settings.c.community_id == community_id))
    conn.execute(
        insert(alert_settings).values(
            community_id=community_id, spec=settings.model_dump_json(by_alias=True)
        )
    )


def readings_decoder(sensors: tuple[str, ...]) -> ReadingsDecoder:
    """Decodes energy_minute entries into, per sensor of `sensors`, the column of its
    Readings (None when absent), skipping the rest of the JSON without building it (most of
    a payload is readings no rule looks at): a pass's entries of one device in one call;
    one at a time, and the odd one leniently (rules.reading_of), when a reading is not of a
    Reading's types."""
    fields = [(f"s{n}", Optional[Reading], None) for n in range(len(sensors))]  # noqa: UP045
    names = {f"s{n}": name for n, name in enumerate(sensors)}
    # Not tracked by the garbage collector (they hold no containers): a pass makes several
    # per entry, which would otherwise set off collections of the young generation.
    readings = msgspec.defstruct("Readings", fields, rename=names, gc=False)
    absent = readings()
    payload = msgspec.defstruct(
        "Payload", [("readings", readings, msgspec.field(default_factory=readings))], gc=False
    )
    entry = msgspec.defstruct("Entry", [("payload", payload)], gc=False)
    # Typed as Any: the structs are made here, mypy cannot see their fields.
    typed_all: Callable[[bytes], Any] = msgspec.json.Decoder(list[entry]).decode  # type: ignore[valid-type]
    typed: Callable[[bytes], Any] = msgspec.json.Decoder(entry).decode
    loose_payload = msgspec.defstruct("LoosePayload", [("readings", Any, None)])
    loose_entry = msgspec.defstruct("LooseEntry", [("payload", loose_payload)])
    loose: Callable[[bytes], Any] = msgspec.json.Decoder(loose_entry).decode
    of_entry = attrgetter("payload.readings")
    columns = [attrgetter(name) for name in names]

    def one(text: bytes) -> Any:
        try:
            found = of_entry(typed(text))
        except msgspec.ValidationError:  # a reading of other types, or `readings` not an object
            values = loose(text).payload.readings
            if not isinstance(values, dict):
                return absent
            return readings(*(reading_of(values.get(name)) for name in sensors))
        return found

    def decode(texts: Sequence[bytes]) -> list[list[Reading | None]]:
        try:
            found = [*map(of_entry, typed_all(b"[" + b",".join(texts) + b"]"))]
        except msgspec.ValidationError:
            found = [*map(one, texts)]
        return [[*map(column, found)] for column in columns]

    return decode


def minute_seconds(value: str) -> int:
    """An RFC 3339 time as Unix seconds (FormatError when it is not one)."""
    return int(parse_rfc3339(value, what="time").timestamp())
