"""FHIR instants and the dates of history parameters (https://hl7.org/fhir/R4/datatypes.html#instant)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import formatdate

_DATE_PARAM = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_instant(moment: datetime) -> str:
    """Millisecond precision UTC text, as stored in ``meta.lastUpdated``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: the sortable form kept beside the text."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate for Last-Modified."""
    return _http_date_of_second(int(moment.timestamp()))


@functools.lru_cache(maxsize=4096)
def _http_date_of_second(epoch_second: int) -> str:
    return formatdate(epoch_second, usegmt=True)


def parse_date_range(text: str) -> tuple[datetime, datetime] | None:
    """The [start, end) interval a FHIR date/dateTime/instant covers at its precision.

    ``2024`` covers the whole year, ``2024-03-05T10:00`` the minute. A value with a time but
    no zone is read as UTC. None when the text is not a FHIR date.
    """
    match = _DATE_PARAM.fullmatch(text.strip())
    if not match:
        return None
    parts = match.groupdict()
    try:
        zone = UTC
        if parts["tz"] and parts["tz"] != "Z":
            sign = 1 if parts["tz"][0] == "+" else -1
            hours, minutes = int(parts["tz"][1:3]), int(parts["tz"][4:6])
            zone = UTC if (hours, minutes) == (0, 0) else _offset(sign, hours, minutes)
        year = int(parts["year"])
        if parts["month"] is None:
            start = datetime(year, 1, 1, tzinfo=zone)
            return start, datetime(year + 1, 1, 1, tzinfo=zone)
        month = int(parts["month"])
        if parts["day"] is None:
            start = datetime(year, month, 1, tzinfo=zone)
            end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=zone)
            return start, end
        day = int(parts["day"])
        if parts["hour"] is None:
            start = datetime(year, month, day, tzinfo=zone)
            return start, start + timedelta(days=1)
        hour, minute = int(parts["hour"]), int(parts["minute"])
        if parts["second"] is None:
            start = datetime(year, month, day, hour, minute, tzinfo=zone)
            return start, start + timedelta(minutes=1)
        second = int(parts["second"])
        fraction = parts["fraction"] or ""
        micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
        start = datetime(year, month, day, hour, minute, second, micros, tzinfo=zone)
        digits = len(fraction) - 1
        step = (
            timedelta(microseconds=10 ** max(0, 6 - digits)) if fraction else timedelta(seconds=1)
        )
        return start, start + step
    except (ValueError, OverflowError):
        return None


def _offset(sign: int, hours: int, minutes: int) -> timezone:
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
