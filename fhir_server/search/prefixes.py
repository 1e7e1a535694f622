"""Comparison prefixes as bounds on stored values (https://hl7.org/fhir/R4/search.html#prefix).

A resource matches when one of its values does; ``ne`` therefore selects resources with a
value outside the search range (not those without any value). Dates are ranges on both
sides: a resource value covers [low, high) at its precision (a
Period its span), and so does the search value. R4 defines each prefix on those ranges:
``eq`` means the resource range lies inside the search range, ``gt`` that the range above
the search value intersects the resource range, and so on. Numbers carry an implicit
precision: ``100`` means [99.5, 100.5) while ``100.00`` means [99.995, 100.005).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from fhir_server.errors import BadRequest
from fhir_server.model.instant import now_utc, parse_date_range, to_micros
from fhir_server.search.plan import Bound, Bounds

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIXED = re.compile(rf"({'|'.join(PREFIXES)})(?=[-+0-9.])")
# A '+' in an offset arrives as a space when the client did not percent-encode it.
_SPACE_OFFSET = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:\d{2})$")
APPROXIMATE_SHARE = 0.1  # 'ap': within 10% (search.html#prefix recommends it)


def split_prefix(text: str) -> tuple[str, str]:
    match = _PREFIXED.match(text)
    if match:
        return match.group(1), text[2:]
    return "eq", text


def date_bounds(text: str, *, low: str = "low", high: str = "high") -> tuple[str, Bounds]:
    """The prefix and bounds of a date search value; 400 when it is not a FHIR date."""
    prefix, value = split_prefix(text)
    value = _SPACE_OFFSET.sub(r"\1+\2", value)
    interval = parse_date_range(value)
    if interval is None:
        raise BadRequest(
            f"{text[:60]!r} is not a FHIR date (e.g. 2024, 2024-03, 2024-03-05T10:00:00Z, "
            "with an optional prefix such as ge)",
            rofecare_code="rofecare-2101",
        )
    start, end = to_micros(interval[0]), to_micros(interval[1])
    return prefix, range_bounds(prefix, start, end, low, high)


def range_bounds(prefix: str, start: int, end: int, low: str, high: str) -> Bounds:
    """Bounds on a stored [low, high) range for the search range [start, end)."""
    # Inside [start, end): "low < end" follows from the other two and bounds the index range.
    inside = (Bound(low, ">=", start), Bound(low, "<", end), Bound(high, "<=", end))
    if prefix == "eq":
        return (inside,)
    if prefix == "ne":  # a value not contained in the search range (HAPI's reading)
        return ((Bound(low, "<", start),), (Bound(high, ">", end),))
    if prefix == "gt":
        return ((Bound(high, ">", end),),)
    if prefix == "lt":
        return ((Bound(low, "<", start),),)
    if prefix == "ge":
        return ((Bound(high, ">", end),), inside)
    if prefix == "le":
        return ((Bound(low, "<", start),), inside)
    if prefix == "sa":
        return ((Bound(low, ">=", end),),)
    if prefix == "eb":
        return ((Bound(high, "<=", start),),)
    if prefix == "ap":
        now = to_micros(now_utc())
        margin = int(abs(now - start) * APPROXIMATE_SHARE)
        return ((Bound(low, "<", end + margin), Bound(high, ">", start - margin)),)
    raise AssertionError(prefix)


def number_bounds(text: str, column: str = "value") -> tuple[str, Bounds]:
    """The prefix and bounds of a number (or a quantity's number) search value."""
    prefix, value = split_prefix(text)
    number = _decimal(value, text)
    exact = float(number)
    if prefix in ("eq", "ne"):
        half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
        low, high = float(number - half), float(number + half)
        if prefix == "ne":
            return prefix, ((Bound(column, "<", low),), (Bound(column, ">=", high),))
        return prefix, ((Bound(column, ">=", low), Bound(column, "<", high)),)
    if prefix in ("gt", "sa"):
        return prefix, ((Bound(column, ">", exact),),)
    if prefix in ("lt", "eb"):
        return prefix, ((Bound(column, "<", exact),),)
    if prefix == "ge":
        return prefix, ((Bound(column, ">=", exact),),)
    if prefix == "le":
        return prefix, ((Bound(column, "<=", exact),),)
    margin = abs(exact) * APPROXIMATE_SHARE
    return prefix, ((Bound(column, ">=", exact - margin), Bound(column, "<=", exact + margin)),)


def _decimal(value: str, text: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or len(value) > 40:
        raise BadRequest(
            f"{text[:60]!r} is not a number (with an optional prefix such as ge)",
            rofecare_code="rofecare-2102",
        )
    return number
