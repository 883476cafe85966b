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
from typing import Annotated, Any, Literal

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


# One energy_minute entry as the rules see it: its log index, its minute and arrival (Unix
# seconds), and the payload's `readings` (empty for rules that need no values).
Sample = tuple[int, int, int, dict[str, Any]]


@dataclass(kw_only=True)
class State:
    """Where one (rule, subject) stands; `data` is the rule kind's memory."""

    state: str = "inactive"
    since: int | None = None
    last_notified: int | None = None
    acked_by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False


@dataclass(frozen=True, kw_only=True)
class Change:
    """A state change of one (rule, subject) at a reading's minute."""

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


def _number(reading: Any, name: str) -> Number | None:
    value = reading.get(name) if isinstance(reading, dict) else None
    # JSON numbers only (a bool is an int to isinstance; the type test is also the fastest)
    return value if type(value) is int or type(value) is float else None


def _on(reading: Any) -> bool | None:
    """A switch reading: on during the minute (any sample on), None when absent."""
    if not isinstance(reading, dict):
        return None
    if isinstance(reading.get("any"), bool):
        return bool(reading["any"])
    value = _number(reading, "on_fraction")
    value = _number(reading, "avg") if value is None else value
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


def on_readings(
    rule: Rule,
    samples: Sequence[Sample],
    state: State,
    subject: str,
    profile: dict[str, Any] | None = None,
) -> list[Change]:
    """The rule's changes for readings of one device it watches, in log order (`profile`:
    the device's declared sensors). A minute not after one already seen (the device resent
    out of order) is skipped."""
    data = state.data
    before = last = data.get("last_minute")
    arrival = data.get("last_arrival", 0)
    fresh = []
    for sample in samples:
        if last is not None and sample[1] <= last:
            continue
        fresh.append(sample)
        last = sample[1]
        if sample[2] > arrival:
            arrival = sample[2]
    if not fresh:
        return []
    data["last_minute"] = last
    if arrival > data.get("last_arrival", 0):
        data["last_arrival"] = arrival
    state.dirty = True
    condition = rule.spec.condition
    if isinstance(condition, Threshold):
        return _threshold(rule, condition, fresh, state, subject)
    if isinstance(condition, Counter):
        return _counter(rule, condition, fresh, state, subject, profile)
    if isinstance(condition, Boiler):
        return _boiler(rule, condition, fresh, state, subject)
    return _heard(rule, condition, fresh, state, subject, before)


def _threshold(
    rule: Rule, c: Threshold, fresh: list[Sample], state: State, subject: str
) -> list[Change]:
    changes: list[Change] = []
    sensor, name, beyond, limit = c.sensor, c.field, OPS[c.op], c.value
    span = c.for_minutes * MINUTE
    for idx, minute, _, values in fresh:
        value = _number(values.get(sensor), name)
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
    fresh: list[Sample],
    state: State,
    subject: str,
    profile: dict[str, Any] | None,
) -> list[Change]:
    declared = (profile or {}).get("sensors", {}).get(c.sensor, {})
    low = c.min if c.min is not None else 0
    high = c.max if c.max is not None else declared.get("max")
    sensor, name = c.sensor, c.field
    changes: list[Change] = []
    for idx, minute, _, values in fresh:
        value = _number(values.get(sensor), name)
        if value is None:
            continue
        if value < low:
            problem: str | None = f"{sensor}.{name} = {value} runs backwards (below {low})"
        elif high is not None and value > high:
            problem = f"{sensor}.{name} = {value} jumps beyond the plausible {high}"
        else:
            problem = None
        if problem is not None and state.state not in ACTIVE:
            changes.append(
                _move(rule, subject, state, "firing", minute, problem, notify=True, idx=idx)
            )
        elif problem is None and state.state in ACTIVE:
            detail = f"{sensor}.{name} = {value} is plausible again"
            changes.append(
                _move(rule, subject, state, "resolved", minute, detail, notify=True, idx=idx)
            )
    return changes


def _heard(
    rule: Rule, c: Silence, fresh: list[Sample], state: State, subject: str, last: int | None
) -> list[Change]:
    """A silence rule hears readings: the silence (if any) is over. A gap in the readings'
    minutes longer than the rule allows, which the clock did not see (the gateway was down,
    or the device's backlog filled it in), is reported too, as it happened."""
    changes: list[Change] = []
    limit = c.minutes * MINUTE
    for idx, minute, _, _ in fresh:
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


def boiler_phase(c: Boiler, values: dict[str, Any]) -> str:
    """The boiler's phase during a minute, as the seed's process_phase works it out:
    ignition, combustion (fan on), holding (fan off); below the set point or stopped
    when the water is that cold; undefined when a reading is missing."""
    water = _number(values.get(c.water), "avg")
    fan = _on(values.get(c.fan))
    ignition = _on(values.get(c.ignition)) if c.ignition else False
    if water is None or fan is None or ignition is None:
        return "undefined"
    if water < c.stopped_below:
        return "stopped"
    if water < c.set_point:
        return "below_set_point"
    if ignition:
        return "ignition"
    return "combustion" if fan else "holding"


def _boiler(rule: Rule, c: Boiler, fresh: list[Sample], state: State, subject: str) -> list[Change]:
    data = state.data
    previous = data.get("phase")
    last_seen = data.get("last_target")
    window = c.no_repeat_minutes * MINUTE
    changes: list[Change] = []
    for idx, minute, _, values in fresh:
        phase = boiler_phase(c, values)
        if phase != c.into:
            if state.state in ACTIVE:  # the seed sends nothing when the boiler recovers
                changes.append(
                    _move(rule, subject, state, "resolved", minute, f"phase {phase}",
                          notify=False, idx=idx)
                )  # fmt: skip
        elif previous == c.into and state.state in ACTIVE:
            last_seen = minute
        else:
            water = _number(values.get(c.water), "avg")
            detail = f"phase {previous or 'unknown'} -> {phase} (water {water})"
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
