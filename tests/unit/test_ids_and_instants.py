"""Ids, ETags and FHIR date ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fhir_server.model.ids import is_valid_id, new_id, parse_etag
from fhir_server.model.instant import parse_date_range, to_instant


@pytest.mark.parametrize("value", ["a", "A-1.b", "x" * 64, new_id()])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize(
    "value", ["", ".", "..", "../x", "a/b", "x" * 65, "a b", "é", "1'--", "a\n"]
)
def test_invalid_ids(value: str) -> None:
    assert not is_valid_id(value)


@pytest.mark.parametrize(
    ("header", "version"),
    [('W/"3"', 3), ('"12"', 12), (' W/"1" ', 1), ("3", None), ('W/"0"', None), ('W/"a"', None)],
)
def test_parse_etag(header: str, version: int | None) -> None:
    assert parse_etag(header) == version


@pytest.mark.parametrize(
    ("text", "start", "length"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC), timedelta(days=366)),
        ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), timedelta(days=29)),
        ("2023-12", datetime(2023, 12, 1, tzinfo=UTC), timedelta(days=31)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC), timedelta(days=1)),
        ("2024-02-29T10:30", datetime(2024, 2, 29, 10, 30, tzinfo=UTC), timedelta(minutes=1)),
        (
            "2024-02-29T10:30:05Z",
            datetime(2024, 2, 29, 10, 30, 5, tzinfo=UTC),
            timedelta(seconds=1),
        ),
        (
            "2024-02-29T10:30:05.25+02:00",
            datetime(2024, 2, 29, 10, 30, 5, 250000, tzinfo=timezone(timedelta(hours=2))),
            timedelta(milliseconds=10),
        ),
    ],
)
def test_date_ranges(text: str, start: datetime, length: timedelta) -> None:
    interval = parse_date_range(text)
    assert interval is not None
    assert interval[0] == start
    assert interval[1] - interval[0] == length


@pytest.mark.parametrize(
    "text", ["", "24", "2024-13", "2024-02-30", "2024-01-01T25:00", "x", "2024-1"]
)
def test_bad_dates(text: str) -> None:
    assert parse_date_range(text) is None


def test_instant_text_is_millisecond_utc() -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert to_instant(moment) == "2024-05-06T06:08:09.123Z"
