"""Alert rules: what each kind watches, and the state machine of one (rule, subject).

States: inactive, pending (a threshold met, its `for` not yet elapsed), firing, acknowledged
(firing, and someone said so), resolved. Rules see readings in their minutes' order per
subject, so a backlog replays as it happened; the evaluator (gateway/alerts/evaluator.py)
decides what is late and what gets sent.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
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


@dataclass(frozen=True, kw_only=True)
class Reading:
    """One energy_minute entry as the rules see it."""

    device_id: str
    minute: int  # Unix seconds, on the minute
    arrived: int  # when the gateway received it
    values: dict[str, Any]  # the payload's `readings`
    profile: dict[str, Any] | None  # the device's declared sensors


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


def _move(
    rule: Rule, subject: str, state: State, new: str, minute: int, detail: str, *, notify: bool
) -> Change:
    state.state, state.since, state.dirty = new, minute, True
    if new != "acknowledged":
        state.acked_by = None
    return Change(
        rule=rule, subject=subject, state=new, minute=minute, detail=detail, notify=notify
    )


def _number(reading: Any, name: str) -> Number | None:
    value = reading.get(name) if isinstance(reading, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _on(reading: Any) -> bool | None:
    """A switch reading: on during the minute (any sample on), None when absent."""
    if not isinstance(reading, dict):
        return None
    if isinstance(reading.get("any"), bool):
        return bool(reading["any"])
    value = _number(reading, "on_fraction")
    value = _number(reading, "avg") if value is None else value
    return None if value is None else value > 0


def subject_of(rule: Rule, device_id: str) -> str:
    """What a rule's state is kept per: the device, or the device's sensor."""
    condition = rule.spec.condition
    if isinstance(condition, Threshold | Counter):
        return f"{device_id}/{condition.sensor}"
    return device_id


def on_reading(
    rule: Rule, reading: Reading, state: State, subject: str | None = None
) -> list[Change]:
    """The rule's changes for one reading of a device it watches (`subject`: the rule's
    subject for that device, when the caller has it already)."""
    data = state.data
    last = data.get("last_minute")
    if last is not None and reading.minute <= last:
        return []  # an older minute than one already seen (the device resent out of order)
    data["last_minute"] = reading.minute
    if reading.arrived > data.get("last_arrival", 0):
        data["last_arrival"] = reading.arrived
    state.dirty = True
    if subject is None:
        subject = subject_of(rule, reading.device_id)
    condition = rule.spec.condition
    if isinstance(condition, Threshold):
        return _threshold(rule, condition, reading, state, subject)
    if isinstance(condition, Counter):
        return _counter(rule, condition, reading, state, subject)
    if isinstance(condition, Boiler):
        return _boiler(rule, condition, reading, state, subject)
    return _heard(rule, condition, reading, state, subject, last)


def _threshold(
    rule: Rule, c: Threshold, reading: Reading, state: State, subject: str
) -> list[Change]:
    value = _number(reading.values.get(c.sensor), c.field)
    if value is None:
        return []
    detail = f"{c.sensor}.{c.field} = {value} ({c.op} {c.value})"
    changes = []
    if OPS[c.op](value, c.value):
        if state.state in ("inactive", "resolved"):
            changes.append(
                _move(rule, subject, state, "pending", reading.minute, detail, notify=False)
            )
        if (
            state.state == "pending"
            and reading.minute - (state.since or 0) >= c.for_minutes * MINUTE
        ):
            changes.append(
                _move(rule, subject, state, "firing", reading.minute, detail, notify=True)
            )
    elif state.state == "pending":
        changes.append(
            _move(rule, subject, state, "inactive", reading.minute, detail, notify=False)
        )
    elif state.state in ACTIVE:
        changes.append(_move(rule, subject, state, "resolved", reading.minute, detail, notify=True))
    return changes


def _counter(rule: Rule, c: Counter, reading: Reading, state: State, subject: str) -> list[Change]:
    value = _number(reading.values.get(c.sensor), c.field)
    if value is None:
        return []
    declared = (reading.profile or {}).get("sensors", {}).get(c.sensor, {})
    low = c.min if c.min is not None else 0
    high = c.max if c.max is not None else declared.get("max")
    if value < low:
        problem: str | None = f"{c.sensor}.{c.field} = {value} runs backwards (below {low})"
    elif high is not None and value > high:
        problem = f"{c.sensor}.{c.field} = {value} jumps beyond the plausible {high}"
    else:
        problem = None
    if problem is not None and state.state not in ACTIVE:
        return [_move(rule, subject, state, "firing", reading.minute, problem, notify=True)]
    if problem is None and state.state in ACTIVE:
        detail = f"{c.sensor}.{c.field} = {value} is plausible again"
        return [_move(rule, subject, state, "resolved", reading.minute, detail, notify=True)]
    return []


def _heard(
    rule: Rule, c: Silence, reading: Reading, state: State, subject: str, last: int | None
) -> list[Change]:
    """A silence rule hears a reading: the silence (if any) is over. A gap in the readings'
    minutes longer than the rule allows, which the clock did not see (the gateway was down,
    or the device's backlog filled it in), is reported too, as it happened."""
    if state.state in ACTIVE:
        return [
            _move(rule, subject, state, "resolved", reading.minute, "readings again", notify=True)
        ]
    if last is None or reading.minute - (last + MINUTE) <= c.minutes * MINUTE:
        return []
    began = last + MINUTE
    detail = f"no reading for the {(reading.minute - began) // MINUTE} minutes before this one"
    return [
        _move(rule, subject, state, "firing", began + c.minutes * MINUTE, detail, notify=True),
        _move(rule, subject, state, "resolved", reading.minute, "readings again", notify=True),
    ]


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


def _boiler(rule: Rule, c: Boiler, reading: Reading, state: State, subject: str) -> list[Change]:
    phase = boiler_phase(c, reading.values)
    previous = state.data.get("phase")
    state.data["phase"] = phase
    if phase != c.into:
        if state.state in ACTIVE:  # the seed sends nothing when the boiler recovers
            detail = f"phase {phase}"
            return [_move(rule, subject, state, "resolved", reading.minute, detail, notify=False)]
        return []
    last_seen = state.data.get("last_target")
    state.data["last_target"] = reading.minute
    if previous == c.into and state.state in ACTIVE:
        return []
    water = _number(reading.values.get(c.water), "avg")
    detail = f"phase {previous or 'unknown'} -> {phase} (water {water})"
    window = c.no_repeat_minutes * MINUTE
    repeat = last_seen is not None and reading.minute - last_seen <= window
    if repeat:
        detail += f"; in it within the previous {c.no_repeat_minutes} minutes: not sent"
    return [_move(rule, subject, state, "firing", reading.minute, detail, notify=not repeat)]
