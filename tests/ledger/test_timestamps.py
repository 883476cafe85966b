"""The one RFC 3339 parser: exactly the pinned UTC form (docs/timestamps.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.base import SchemaError
from contracts.patio import parse_patio_datetime
from ledger.encoding import parse_rfc3339, rfc3339_utc
from ledger.errors import FormatError

moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda moment: moment.replace(tzinfo=UTC))

REFUSED = [
    "2026-10-31T09:43:00+0000",
    "2026-10-31T09:43:00+00",
    "2026-10-31T09:43:00+00:00:00",
    "2026-10-31T09:43:00+00:00",  # valid RFC 3339, but not the pinned UTC spelling
    "2026-10-31T09:43:00-00:00",
    "2026-10-31T10:43:00+01:00",
    "2026-10-31T09:43Z",
    "20261031T094300Z",
    "2026-W44-6T09:44:00Z",
    "2026-10-31T09:43:00 Z",
    "2026-10-31 09:43:00Z",
    "2026-10-31t09:43:00Z",
    "2026-10-31T09:43:00z",
    "2026-10-31T09:39:00.000000001Z",
    "2026-10-31T09:43:00.Z",
    "2026-10-31T09:43:00",
    "2016-12-31T23:59:60Z",
    "2026-11-31T09:43:00Z",
    "2026-02-29T09:43:00Z",
    "2026-10-31T24:00:00Z",
    "0000-10-31T09:43:00Z",
    " 2026-10-31T09:43:00Z",
    "2026-10-31T09:43:00Z\n",
    "2026-1-31T09:43:00Z",
    "２026-10-31T09:43:00Z",
    "",
]


@pytest.mark.parametrize("text", REFUSED)
def test_refused_forms_name_the_field(text: str) -> None:
    with pytest.raises(FormatError, match=r"^start "):
        parse_rfc3339(text, what="start")


def test_a_fraction_only_where_the_caller_allows_it() -> None:
    assert parse_rfc3339("2026-10-31T09:43:00.5Z", what="t") == datetime(
        2026, 10, 31, 9, 43, 0, 500000, tzinfo=UTC
    )
    assert parse_rfc3339("2024-02-29T00:00:00.123456000Z", what="t").microsecond == 123456
    with pytest.raises(FormatError, match="takes no fractional second"):
        parse_rfc3339("2026-10-31T09:43:00.0Z", what="start", fraction=False)


def test_non_strings_are_refused() -> None:
    with pytest.raises(FormatError, match="must be an RFC 3339 string"):
        parse_rfc3339(1700000000, what="start")  # type: ignore[arg-type]


@given(moments)
def test_round_trips_what_the_ledger_writes(moment: datetime) -> None:
    """Every received_at the ledger formats parses back to the same millisecond."""
    text = rfc3339_utc(moment)
    assert parse_rfc3339(text, what="t") == moment.replace(
        microsecond=moment.microsecond // 1000 * 1000
    )


@given(moments)
def test_the_pinned_form_parses_to_its_value(moment: datetime) -> None:
    whole = moment.replace(microsecond=0)
    text = whole.strftime("%Y-%m-%dT%H:%M:%SZ") if whole.year >= 1000 else None
    if text is not None:
        assert parse_rfc3339(text, what="t", fraction=False) == whole


@given(moments, st.sampled_from(["+00:00", "+0000", "+00", "z", " Z", "-00:00", ""]))
def test_any_other_zone_spelling_is_refused(moment: datetime, zone: str) -> None:
    text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}{zone}"
    with pytest.raises(FormatError):
        parse_rfc3339(text, what="t")


@given(st.text(max_size=40))
def test_arbitrary_text_is_refused_or_is_the_pinned_form(text: str) -> None:
    try:
        moment = parse_rfc3339(text, what="t")
    except FormatError:
        return
    assert moment.tzinfo is UTC
    assert text.endswith("Z") and text[10] == "T" and text.isascii()
    assert text[:19] == f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-10-10 10:10", datetime(2021, 10, 10, 10, 10, tzinfo=UTC)),
        ("2021-10-10 10:10:30", datetime(2021, 10, 10, 10, 10, 30, tzinfo=UTC)),
        ("2021-10-10T10:10:00Z", datetime(2021, 10, 10, 10, 10, tzinfo=UTC)),
    ],
)
def test_the_patio_datetime_takes_the_hubs_layout(text: str, expected: datetime) -> None:
    assert parse_patio_datetime(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2021-1-10 10:10", "2021-10-10 10", "2021-10-10T10:10", "2021-10-10 10:10+01:00",
     "2021-10-10", "2021-02-30 10:10", "2021-10-10  10:10", "2021-10-10 10:10:00.5"],
)  # fmt: skip
def test_the_patio_datetime_refuses_anything_else(text: str) -> None:
    with pytest.raises(SchemaError, match=r"dataToStore\.datetime"):
        parse_patio_datetime(text)
