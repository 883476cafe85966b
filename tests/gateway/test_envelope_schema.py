"""energy_minute's two schemas agree: admission runs the msgspec one, FastAPI documents (and
/api validates with) the Pydantic one; over a corpus of envelopes as the gateway parses them,
each accepts exactly what the other accepts. And the payload's JCS, which admission takes
from what the schema established, is RFC 8785's for every payload the schema accepts."""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rfc8785
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic_core import from_json

from contracts.base import SchemaError, strict_model
from contracts.energy_minute import Envelope, parse_envelope, payload_jcs
from ledger.errors import FormatError

VALID: dict[str, Any] = {
    "payload": {
        "device_id": "boiler-1",
        "seq": 7,
        "start": "2026-11-30T10:05:00Z",
        "period_s": 60,
        "readings": {
            "water": {"unit": "Cel", "n": 12, "missing": 0, "avg": 61.5, "min": 60, "max": 63.25},
            "meter": {"unit": "Wh", "sum": 12.5, "n": 60, "missing": 0},
            "fan": {"unit": "bool", "any": True, "on_fraction": 0.25, "n": 60, "missing": 0},
            "lamp": {"unit": "bool", "any": False, "on_fraction": 0},
            "room:2.a_b-c": {"unit": "Cel", "n": 0, "missing": 12, "avg": None},
        },
    },
    "sig": "c2lnbmF0dXJl",
}
# What a field may hold instead: the wrong JSON type, edge numbers, odd text.
SUBSTITUTES: list[Any] = [
    None, True, False, 0, 1, -1, 60, 60.0, 0.5, 1.5, -0.0, 1e308, 2**53 - 1, 2**53, 2**63,
    2**64, 2**70, -(2**70), 10**400, float("inf"), float("-inf"), float("nan"), "", "x", "7",
    "60", "Wh", "bool", "Cel", "a\u0000b", "boiler-1\n", "\u00e9", "\ud83d\ude00", "x" * 16,
    "x" * 17, "x" * 64, "x" * 65, [], [1], {}, {"unit": "Wh", "sum": 1},
]  # fmt: skip


def _paths(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))


def _at(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def corpus() -> Iterator[Any]:
    """The valid envelope, and each field replaced, removed, or joined by an unknown one."""
    yield VALID
    objects = [(), *(p for p in _paths(VALID) if isinstance(_at(VALID, p), dict))]
    for path in _paths(VALID):
        for substitute in SUBSTITUTES:
            changed = copy.deepcopy(VALID)
            _at(changed, path[:-1])[path[-1]] = substitute
            yield changed
        removed = copy.deepcopy(VALID)
        del _at(removed, path[:-1])[path[-1]]
        yield removed
    for path in objects:
        for name in ("extra", "unit", "Sum", "bad name", "x" * 65, "\u00e9"):
            added = copy.deepcopy(VALID)
            _at(added, path).setdefault(name, 1)
            yield added
    for name in ("a,b", ",", "a,", "a\n", "", "bad name", "x" * 65, "x" * 64, "\u00e9"):
        named = copy.deepcopy(VALID)  # a valid reading under a doubtful name
        named["payload"]["readings"][name] = {"unit": "Cel", "n": 1, "missing": 0}
        yield named
    for count in (0, 256, 257):
        many = copy.deepcopy(VALID)
        many["payload"]["readings"] = {
            f"t{n}": {"unit": "Cel", "n": 1, "missing": 0} for n in range(count)
        }
        yield many
    for value in SUBSTITUTES:
        yield value  # not even an object
        yield {"payload": value, "sig": "c2ln"}


def parsed(value: Any) -> Any:
    """The value as the gateway has it: JSON text parsed by the body's parser."""
    return from_json(json.dumps(value))


def pydantic_accepts(envelope: Any) -> bool:
    try:
        strict_model(Envelope, envelope, "envelope")
    except SchemaError:
        return False
    return True


def msgspec_accepts(envelope: Any) -> bool:
    try:
        parse_envelope(envelope)
    except SchemaError:
        return False
    return True


CASES = [parsed(case) for case in corpus()]


def test_the_corpus_has_both_verdicts() -> None:
    verdicts = [pydantic_accepts(case) for case in CASES]
    assert len(CASES) > 1500 and 100 < sum(verdicts) < len(CASES) - 1000


@pytest.mark.parametrize("start", range(0, len(CASES), 500))
def test_msgspec_and_pydantic_accept_the_same_envelopes(start: int) -> None:
    disagree = [
        case
        for case in CASES[start : start + 500]
        if pydantic_accepts(case) != msgspec_accepts(case)
    ]
    assert disagree == []


@pytest.mark.parametrize(
    "text",
    [
        rb'{"payload":{"device_id":"a","seq":1,"start":"s","period_s":60,"readings":'
        rb'{"t":{"unit":"Cel","n":1,"missing":0,"avg":1e400}}},"sig":"x"}',
        rb'{"payload":{"device_id":"a","seq":1,"start":"s","period_s":60,"readings":'
        rb'{"t":{"unit":"Cel","n":1,"missing":0,"avg":NaN}}},"sig":"x"}',
        rb'{"payload":{"device_id":"a\u0000","seq":1,"start":"s","period_s":60,"readings":'
        rb'{"t":{"unit":"Cel","n":1,"missing":0}}},"sig":"x"}',
        rb'{"payload":{"device_id":"a","seq":1,"start":"s","period_s":60,"readings":'
        rb'{"t":{"unit":"C\u0000","n":1,"missing":0}}},"sig":"x"}',
        rb'{"payload":{"device_id":"a","seq":1,"start":"s","period_s":60e0,"readings":'
        rb'{"t":{"unit":"Cel","n":1,"missing":0}}},"sig":"x"}',
        rb'{"payload":{"device_id":"a","seq":123456789012345678901234567890,"start":"s",'
        rb'"period_s":60,"readings":{"t":{"unit":"Cel","n":1,"missing":0}}},"sig":"x"}',
    ],
)
def test_raw_json_edges_get_the_same_verdict(text: bytes) -> None:
    envelope = from_json(text)
    assert pydantic_accepts(envelope) == msgspec_accepts(envelope)


def test_a_refusal_names_the_field() -> None:
    bad = copy.deepcopy(VALID)
    bad["payload"]["readings"]["fan"]["on_fraction"] = "0.5"
    with pytest.raises(SchemaError, match=r"payload\.readings\.fan\.on_fraction"):
        parse_envelope(bad)
    bad = copy.deepcopy(VALID)
    bad["payload"]["seq"] = True
    with pytest.raises(SchemaError, match=r"envelope: payload\.seq: Expected `int`, got `bool`"):
        parse_envelope(bad)


# payload_jcs: canonical_json's walk narrowed to what the schema leaves open, over payloads
# parse_envelope accepts, drawn from the edges of each field's value space.
EDGES = [
    0.0, -0.0, 5e-324, -5e-324, 1e-7, 1e-4, 9.999e-5, -1e-4, 0.1, 21.5, 1e16, -1e16, 1e21,
    9999999999999998.0, 2.0**53, -(2.0**53), 2**53 - 1, -(2**53) + 1, 2**53, 10**300,
    1.7976931348623157e308, 123456789012345680000.0, 1e-6, 1e-5, 9.5e-5, 1e15 + 0.5, 1e15,
]  # fmt: skip
NUMBERS = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**60), 2**60)
    | st.integers(-(2**54), 2**54).map(float)  # integral floats, within 2**53 and beyond
    | st.sampled_from(EDGES)
)
COUNTS = st.integers(0, 2**53 - 1) | st.sampled_from([0, 2**53 - 1])
UNITS = st.text(min_size=1, max_size=16) | st.sampled_from(
    ["Cel", "W", "%", "m\u00b3", "\u00b0C", ':21.0,"', ".0}", "1e-7", "-0.0,"]
)
OPTIONAL_COUNTS = {"n": st.none() | COUNTS, "missing": st.none() | COUNTS}
READINGS = (
    st.fixed_dictionaries(
        {"unit": UNITS.filter(lambda unit: unit not in ("Wh", "bool")), "n": COUNTS,
         "missing": COUNTS},
        optional={"avg": st.none() | NUMBERS, "min": st.none() | NUMBERS,
                  "max": st.none() | NUMBERS},
    )
    | st.fixed_dictionaries({"unit": st.just("Wh"), "sum": NUMBERS}, optional=OPTIONAL_COUNTS)
    | st.fixed_dictionaries(
        {"unit": st.just("bool"), "any": st.booleans(),
         "on_fraction": st.sampled_from([0, 1, 0.0, 1.0, 5e-324, 1e-7, 1e-4, 0.5])
         | st.floats(0, 1)},
        optional=OPTIONAL_COUNTS,
    )
)  # fmt: skip
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_.:-", min_size=1, max_size=64)
PAYLOADS = st.fixed_dictionaries({
    "device_id": st.text(alphabet=string.ascii_letters + string.digits + "_.-", max_size=64)
    .filter(bool),
    "seq": COUNTS,
    "start": st.sampled_from(["2026-11-30T10:05:00Z", '1.0,"x":2.0}']) | st.text(),
    "period_s": st.sampled_from([60, 60.0]),
    "readings": st.dictionaries(NAMES, READINGS, min_size=1, max_size=12),
})  # fmt: skip


def _jcs_or_refusal(encode: Callable[[Any], bytes], payload: Any) -> bytes | str:
    try:
        return encode(payload)
    except (FormatError, rfc8785.CanonicalizationError):
        return "refused"


@settings(max_examples=500, deadline=None)
@given(PAYLOADS)
def test_payload_jcs_is_rfc8785_for_every_valid_payload(payload: dict[str, Any]) -> None:
    envelope = parsed({"payload": payload, "sig": "c2ln"})
    assume(msgspec_accepts(envelope))  # a few numbers lie beyond the schema's float range
    expected = _jcs_or_refusal(rfc8785.dumps, envelope["payload"])
    assert _jcs_or_refusal(payload_jcs, envelope["payload"]) == expected


def test_payload_jcs_of_the_corpus() -> None:
    accepted = [case for case in CASES if msgspec_accepts(case)]
    assert len(accepted) > 100
    for case in accepted:
        payload = case["payload"]
        assert _jcs_or_refusal(payload_jcs, payload) == _jcs_or_refusal(rfc8785.dumps, payload)


@settings(max_examples=300, deadline=None)
@given(
    device_id=st.sampled_from(["boiler-1", "boiler-1\n", "a,b"])
    | st.text(alphabet="ab-.,\n\u00e9", max_size=66),
    names=st.lists(
        st.sampled_from(["t1", "a\n", "a,b", ",", "x" * 64, "x" * 65])
        | st.text(alphabet="ab:,", max_size=66)
        | st.text(alphabet="ab:,\n \u00e9", max_size=3),
        min_size=1,
        max_size=6,
    ),
)
@example(device_id="boiler-1", names=["t1", "a,b"])
@example(device_id="boiler-1", names=["t1", "a\n"])
@example(device_id="boiler-1\n", names=["t1"])
def test_the_patterns_checked_at_once_give_the_schema_verdict(
    device_id: str, names: list[str]
) -> None:
    envelope = copy.deepcopy(VALID)  # device ids and sensor names around the patterns' edges
    envelope["payload"]["device_id"] = device_id
    envelope["payload"]["readings"] = {
        name: {"unit": "Cel", "n": 1, "missing": 0} for name in names
    }
    assert msgspec_accepts(envelope) == pydantic_accepts(envelope)
