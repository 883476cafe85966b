"""Alert rules: what each kind watches, and the state machine of one (rule, subject).

States: inactive, pending (a threshold met, its `for` not yet elapsed), firing, acknowledged
(firing, and someone said so), resolved. Rules see readings in their minutes' order per
subject, so a backlog replays as it happened; the evaluator (gateway/alerts/evaluator.py)
decides what is late and what gets sent.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

READING_NAME = r"^[A-Za-z0-9_.-]{1,64}$"  # as contracts/device_types.py names readings
DEVICE_ID = r"^[A-Za-z0-9_.-]{1,64}$"
TEXT = r"^[^\x00-\x1f]*$"  # names and comments: no control characters (PostgreSQL refuses NUL)
MINUTE = 60
# The boiler monitor seed: no mail or SMS if one went out in the previous 10 minutes.
SEED_NO_REPEAT_MINUTES = 10
ACTIVE = ("firing", "acknowledged")

Name = Annotated[str, StringConstraints(pattern=READING_NAME)]
DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID)]
Number = int | float
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class Strict(BaseModel):
    """Rule inputs: no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class Threshold(Strict):
    """A reading's field beyond a value for `for` minutes in a row (of the readings' minutes)."""

    kind: Literal["threshold"]
    sensor: Name
    field: Literal["avg", "min", "max", "sum", "on_fraction"] = "avg"
    op: Literal[">", ">=", "<", "<="]
    value: Number
    for_minutes: int = Field(default=0, alias="for", ge=0, le=1440)
    device: DeviceId | None = None


class Silence(Strict):
    """A device that has sent no reading for more than `minutes` (by the wall clock)."""

    kind: Literal["silence"]
    minutes: int = Field(ge=1, le=10080)
    device: DeviceId | None = None


class Counter(Strict):
    """A meter whose minute count runs backwards (below `min`, default 0) or jumps beyond
    the plausible range its device type declares (or `max`)."""

    kind: Literal["counter"]
    sensor: Name
    field: Literal["sum", "avg", "max"] = "sum"
    min: Number | None = None
    max: Number | None = None
    device: DeviceId | None = None


class Boiler(Strict):
    """The boiler monitor's rules: its phase each minute, alerting on the change into
    `into`, unless that phase was seen in the previous `no_repeat_minutes`."""

    kind: Literal["boiler"]
    into: Literal["below_set_point", "stopped"]
    water: Name
    fan: Name
    ignition: Name | None = None
    set_point: Number
    stopped_below: Number
    no_repeat_minutes: int = Field(default=SEED_NO_REPEAT_MINUTES, ge=0, le=1440)
    device: DeviceId | None = None


Condition = Annotated[Threshold | Silence | Counter | Boiler, Field(discriminator="kind")]


class RuleSpec(Strict):
    """A rule as the admin writes it."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)]
    condition: Condition
    urgent: bool = False  # sent during quiet hours too
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A stored rule."""

    id: int
    community_id: str
    spec: RuleSpec
    from_idx: int = 0  # the first log index it evaluates (the log's end when it was made)

    def watches(self, device_id: str) -> bool:
        """The rule applies to this device."""
        device = self.spec.condition.device
        return self.spec.enabled and (device is None or device == device_id)


class Reading(msgspec.Struct, frozen=True, gc=False):
    """The fields of one reading rules can look at: JSON numbers (a bool is not one) and the
    switch's `any`; None when absent or of another type."""

    avg: int | float | None = None
    min: int | float | None = None
    max: int | float | None = None
    sum: int | float | None = None
    on_fraction: int | float | None = None
    any: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Readings:
    """One device's energy_minute entries of a pass, in log order, as columns: log indices,
    minutes and arrivals (Unix seconds), and per sensor a rule looks at its Reading (None
    when the entry has none)."""

    idx: Sequence[int]
    minute: Sequence[int]
    arrival: Sequence[int]
    sensors: dict[str, Sequence[Reading | None]]

    @cached_property
    def rising(self) -> bool:
        """Each minute after the one before (once for all the rules watching the device)."""
        return _rising(self.minute)

    @cached_property
    def last_arrival(self) -> int:
        """The latest arrival."""
        return max(self.arrival)

    def take(self, positions: Sequence[int]) -> Readings:
        """The entries at these positions."""
        return Readings(
            idx=[self.idx[i] for i in positions],
            minute=[self.minute[i] for i in positions],
            arrival=[self.arrival[i] for i in positions],
            sensors={name: [column[i] for i in positions] for name, column in self.sensors.items()},
        )


@dataclass(kw_only=True)
class State:
    """Where one (rule, subject) stands; `data` is the rule kind's memory."""

    state: str = "inactive"
    since: int | None = None
    last_notified: int | None = None
    acked_by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """A state change of one (rule, subject) at a reading's minute (a Struct: made in C, a
    pass can make thousands)."""

    rule: Rule
    subject: str
    state: str
    minute: int
    detail: str
    notify: bool  # worth a notification (pending is not; a boiler repeat inside its window is not)
    idx: int = -1  # the log index of the reading it came from (-1: the clock's)


def _move(
    rule: Rule,
    subject: str,
    state: State,
    new: str,
    minute: int,
    detail: str,
    *,
    notify: bool,
    idx: int = -1,
) -> Change:
    state.state, state.since, state.dirty = new, minute, True
    if new != "acknowledged":
        state.acked_by = None
    return Change(
        rule=rule,
        subject=subject,
        state=new,
        minute=minute,
        detail=detail,
        notify=notify,
        idx=idx,
    )


def reading_of(value: Any) -> Reading | None:
    """A reading of any shape as the rules see it (the fields that are not what a Reading
    holds are absent), for an entry the typed decoder refuses."""
    if not isinstance(value, dict):
        return None
    fields = {
        name: number
        for name in ("avg", "min", "max", "sum", "on_fraction")
        # JSON numbers only (a bool is an int to isinstance)
        if type(number := value.get(name)) is int or type(number) is float
    }
    switch = value.get("any")
    return Reading(**fields, any=switch if type(switch) is bool else None)


def _on(reading: Reading | None) -> bool | None:
    """A switch reading: on during the minute (any sample on), None when absent."""
    if reading is None:
        return None
    if reading.any is not None:
        return reading.any
    value = reading.avg if reading.on_fraction is None else reading.on_fraction
    return None if value is None else value > 0


def sensors_of(condition: Threshold | Silence | Counter | Boiler) -> tuple[str, ...]:
    """The readings a rule looks at (a silence rule: none, only the minutes)."""
    if isinstance(condition, Threshold | Counter):
        return (condition.sensor,)
    if isinstance(condition, Boiler):
        return (
            condition.water,
            condition.fan,
            *((condition.ignition,) if condition.ignition else ()),
        )
    return ()


def subject_of(rule: Rule, device_id: str) -> str:
    """What a rule's state is kept per: the device, or the device's sensor."""
    condition = rule.spec.condition
    if isinstance(condition, Threshold | Counter):
        return f"{device_id}/{condition.sensor}"
    return device_id


def _rising(minutes: Sequence[int]) -> bool:
    """Each minute after the one before (in C: this runs for every rule on every pass)."""
    return len(minutes) < 2 or min(map(operator.sub, minutes[1:], minutes[:-1])) > 0


def on_readings(
    rule: Rule,
    readings: Readings,
    state: State,
    subject: str,
    profile: dict[str, Any] | None = None,
) -> list[Change]:
    """The rule's changes for readings of one device it watches, in log order (`profile`:
    the device's declared sensors). A minute not after one already seen (the device resent
    out of order) is skipped."""
    data = state.data
    before = last = data.get("last_minute")
    minutes = readings.minute
    if not minutes:
        return []
    # Usually every minute is new and in order: the columns as they are.
    if (last is not None and minutes[0] <= last) or not readings.rising:
        fresh = []
        for position, minute in enumerate(minutes):
            if last is None or minute > last:
                fresh.append(position)
                last = minute
        if not fresh:
            return []
        readings = readings.take(fresh)
    data["last_minute"] = readings.minute[-1]
    arrival = readings.last_arrival
    if arrival > data.get("last_arrival", 0):
        data["last_arrival"] = arrival
    state.dirty = True
    condition = rule.spec.condition
    if isinstance(condition, Threshold):
        return _threshold(rule, condition, readings, state, subject)
    if isinstance(condition, Counter):
        return _counter(rule, condition, readings, state, subject, profile)
    if isinstance(condition, Boiler):
        return _boiler(rule, condition, readings, state, subject)
    return _heard(rule, condition, readings, state, subject, before)


def _threshold(
    rule: Rule, c: Threshold, fresh: Readings, state: State, subject: str
) -> list[Change]:
    sensor, name, beyond, limit = c.sensor, c.field, OPS[c.op], c.value
    value_of = attrgetter(name)
    values = [None if reading is None else value_of(reading) for reading in fresh.sensors[sensor]]
    numbers = [value for value in values if value is not None]
    if not numbers:
        return []
    # Most passes change nothing: a state the values all agree with (the extremes say).
    low, high = min(numbers), max(numbers)
    some, every = (high, low) if c.op in (">", ">=") else (low, high)
    if state.state in ("inactive", "resolved") and not beyond(some, limit):
        return []
    if state.state in ACTIVE and beyond(every, limit):
        return []
    changes: list[Change] = []
    span = c.for_minutes * MINUTE
    for idx, minute, value in zip(fresh.idx, fresh.minute, values, strict=True):
        if value is None:
            continue
        met = beyond(value, limit)
        if met and state.state in ("inactive", "resolved", "pending"):
            detail = f"{sensor}.{name} = {value} ({c.op} {limit})"
            if state.state != "pending":
                changes.append(
                    _move(rule, subject, state, "pending", minute, detail, notify=False, idx=idx)
                )
            if minute - (state.since or 0) >= span:
                changes.append(
                    _move(rule, subject, state, "firing", minute, detail, notify=True, idx=idx)
                )
        elif not met and state.state in ("pending", *ACTIVE):
            detail = f"{sensor}.{name} = {value} ({c.op} {limit})"
            new, notify = ("inactive", False) if state.state == "pending" else ("resolved", True)
            changes.append(_move(rule, subject, state, new, minute, detail, notify=notify, idx=idx))
    return changes


def _counter(
    rule: Rule,
    c: Counter,
    fresh: Readings,
    state: State,
    subject: str,
    profile: dict[str, Any] | None,
) -> list[Change]:
    declared = (profile or {}).get("sensors", {}).get(c.sensor, {})
    low = c.min if c.min is not None else 0
    high = c.max if c.max is not None else declared.get("max")
    sensor, name = c.sensor, c.field
    value_of = attrgetter(name)
    values = [None if reading is None else value_of(reading) for reading in fresh.sensors[sensor]]
    numbers = [value for value in values if value is not None]
    if not numbers:
        return []
    # Most passes change nothing: a state the values all agree with.
    if state.state in ACTIVE:
        if all(value < low or (high is not None and value > high) for value in numbers):
            return []
    elif min(numbers) >= low and (high is None or max(numbers) <= high):
        return []
    changes: list[Change] = []
    active = state.state in ACTIVE
    for idx, minute, value in zip(fresh.idx, fresh.minute, values, strict=True):
        if value is None:
            continue
        wrong = value < low or (high is not None and value > high)
        if wrong == active:  # no change: the detail is only written for one
            continue
        if not wrong:
            detail = f"{sensor}.{name} = {value} is plausible again"
            new = "resolved"
        elif value < low:
            detail, new = f"{sensor}.{name} = {value} runs backwards (below {low})", "firing"
        else:
            detail, new = f"{sensor}.{name} = {value} jumps beyond the plausible {high}", "firing"
        changes.append(_move(rule, subject, state, new, minute, detail, notify=True, idx=idx))
        active = wrong
    return changes


def _heard(
    rule: Rule, c: Silence, fresh: Readings, state: State, subject: str, last: int | None
) -> list[Change]:
    """A silence rule hears readings: the silence (if any) is over. A gap in the readings'
    minutes longer than the rule allows, which the clock did not see (the gateway was down,
    or the device's backlog filled it in), is reported too, as it happened."""
    limit = c.minutes * MINUTE
    minutes = fresh.minute
    if state.state not in ACTIVE:  # usually: no gap, nothing to say
        heard = minutes if last is None else [last, *minutes]
        if len(heard) < 2 or max(map(operator.sub, heard[1:], heard[:-1])) <= limit + MINUTE:
            return []
    changes: list[Change] = []
    for idx, minute in zip(fresh.idx, minutes, strict=True):
        if state.state in ACTIVE:
            changes.append(
                _move(rule, subject, state, "resolved", minute, "readings again", notify=True,
                      idx=idx)
            )  # fmt: skip
        elif last is not None and minute - (last + MINUTE) > limit:
            began = last + MINUTE
            detail = f"no reading for the {(minute - began) // MINUTE} minutes before this one"
            changes += [
                _move(rule, subject, state, "firing", began + limit, detail, notify=True, idx=idx),
                _move(rule, subject, state, "resolved", minute, "readings again", notify=True,
                      idx=idx),
            ]  # fmt: skip
        last = minute
    return changes


def on_clock(
    rule: Rule, c: Silence, device_id: str, registered: int, state: State, now: int
) -> list[Change]:
    """A silence rule at wall-clock time `now`: nothing heard from the device for longer than
    the rule allows, neither a reading's minute nor an arrival (a backlog being delivered is
    not silence)."""
    if state.state in ACTIVE:
        return []
    last_minute = state.data.get("last_minute")
    silent_since = registered if last_minute is None else last_minute + MINUTE
    heard = max(silent_since, state.data.get("last_arrival", registered))
    limit = c.minutes * MINUTE
    if now - silent_since <= limit or now - heard <= limit:
        return []
    minute = (silent_since + limit) // MINUTE * MINUTE
    detail = f"no reading for more than {c.minutes} minutes"
    return [_move(rule, device_id, state, "firing", minute, detail, notify=True)]


def boiler_phase(
    c: Boiler, water: Reading | None, fan: Reading | None, ignition: Reading | None
) -> str:
    """The boiler's phase during a minute, as the seed's process_phase works it out:
    ignition, combustion (fan on), holding (fan off); below the set point or stopped
    when the water is that cold; undefined when a reading is missing."""
    temperature = None if water is None else water.avg
    blowing = _on(fan)
    lit = _on(ignition) if c.ignition else False
    if temperature is None or blowing is None or lit is None:
        return "undefined"
    if temperature < c.stopped_below:
        return "stopped"
    if temperature < c.set_point:
        return "below_set_point"
    if lit:
        return "ignition"
    return "combustion" if blowing else "holding"


def _boiler(rule: Rule, c: Boiler, fresh: Readings, state: State, subject: str) -> list[Change]:
    data = state.data
    waters, fans = fresh.sensors[c.water], fresh.sensors[c.fan]
    ignitions = fresh.sensors[c.ignition] if c.ignition else [None] * len(waters)
    if state.state not in ACTIVE:  # usually: no minute cold enough to be in `into`
        temperatures = [w.avg for w in waters if w is not None and w.avg is not None]
        coldest = min(temperatures, default=None)
        if coldest is None or coldest >= (c.stopped_below if c.into == "stopped" else c.set_point):
            data["phase"] = boiler_phase(c, waters[-1], fans[-1], ignitions[-1])
            return []
    phases = [
        boiler_phase(c, water, fan, ignition)
        for water, fan, ignition in zip(waters, fans, ignitions, strict=True)
    ]
    previous = data.get("phase")
    last_seen = data.get("last_target")
    window = c.no_repeat_minutes * MINUTE
    changes: list[Change] = []
    for idx, minute, phase, water in zip(fresh.idx, fresh.minute, phases, waters, strict=True):
        if phase != c.into:
            if state.state in ACTIVE:  # the seed sends nothing when the boiler recovers
                changes.append(
                    _move(rule, subject, state, "resolved", minute, f"phase {phase}",
                          notify=False, idx=idx)
                )  # fmt: skip
        elif previous == c.into and state.state in ACTIVE:
            last_seen = minute
        else:
            temperature = None if water is None else water.avg
            detail = f"phase {previous or 'unknown'} -> {phase} (water {temperature})"
            repeat = last_seen is not None and minute - last_seen <= window
            if repeat:
                detail += f"; in it within the previous {c.no_repeat_minutes} minutes: not sent"
            last_seen = minute
            changes.append(
                _move(rule, subject, state, "firing", minute, detail, notify=not repeat, idx=idx)
            )
        previous = phase
    data["phase"] = previous
    if last_seen is not None:
        data["last_target"] = last_seen
    return changes
