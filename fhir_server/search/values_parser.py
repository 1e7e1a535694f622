"""One search value of one parameter type -> a plan predicate (search.html#ptypes).

Every malformed value is a 400 naming the parameter: a value that cannot be understood must
never be read as something else (a wrong answer) or reach the store unchecked.
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.errors import BadRequest
from fhir_server.model.ids import is_valid_id
from fhir_server.search.indexer import UCUM, normalize
from fhir_server.search.plan import (
    Bound,
    Bounds,
    Predicate,
    RangeMatch,
    ReferenceMatch,
    StringMatch,
    TokenMatch,
    TokenText,
    UriMatch,
)
from fhir_server.search.prefixes import date_bounds, number_bounds
from fhir_server.search.tokens import split_escaped, unescape
from fhir_server.search.ucum import canonical

MAX_VALUE_LENGTH = 2_048


def bad(name: str, message: str, code: str) -> BadRequest:
    return BadRequest(f"Search parameter {name!r}: {message}", rofecare_code=code)


def string_predicate(name: str, code: str, modifier: str, value: str) -> Predicate:
    value = unescape(value)
    if modifier == "exact":
        return StringMatch(code, "exact", value)
    return StringMatch(code, "contains" if modifier == "contains" else "prefix", normalize(value))


def token_predicate(name: str, code: str, modifier: str, value: str) -> Predicate:
    if modifier == "text":
        return TokenText(code, normalize(unescape(value)))
    parts = [unescape(part) for part in split_escaped(value, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not all(parts):
            raise bad(name, f"{value[:60]!r} is not system|type-code|value", "rofecare-2103")
        return TokenMatch(f"{code}:of-type", parts[0], f"{parts[1]}|{parts[2]}")
    if len(parts) == 1:
        return TokenMatch(code, None, parts[0])
    if len(parts) == 2 and (parts[0] or parts[1]):
        return TokenMatch(code, parts[0], parts[1] or None)
    raise bad(name, f"{value[:60]!r} is not [system|]code", "rofecare-2103")


def date_predicate(code: str, value: str, kind: str = "date") -> Predicate:
    _, bounds = date_bounds(value)
    return RangeMatch(code, "lastUpdated" if kind == "lastUpdated" else "date", bounds)


def number_predicate(code: str, value: str) -> Predicate:
    _, bounds = number_bounds(value)
    return RangeMatch(code, "number", bounds)


def quantity_predicates(name: str, code: str, value: str) -> tuple[Predicate, ...]:
    """``[prefix]number[|system|code]``; UCUM units compare in canonical form, so
    ``lt1|http://unitsofmeasure.org|g`` finds 500 mg (search.html#quantity)."""
    parts = [unescape(part) for part in split_escaped(value, "|")]
    if len(parts) not in (1, 3):
        raise bad(name, f"{value[:60]!r} is not number|system|code", "rofecare-2105")
    _, bounds = number_bounds(parts[0])
    if len(parts) == 1:
        return (RangeMatch(code, "quantity", bounds),)
    system, unit = parts[1] or None, parts[2] or None
    plain = RangeMatch(code, "quantity", bounds, system, unit)
    target = canonical(1.0, unit) if unit is not None and system in (None, UCUM) else None
    converted = _convert(bounds, unit) if target is not None and unit is not None else None
    if target is None or converted is None:
        return (plain,)
    return (RangeMatch(code, "quantity", converted, UCUM, target[1], True), plain)


def _convert(bounds: Bounds, unit: str) -> Bounds | None:
    result: list[tuple[Bound, ...]] = []
    for alternative in bounds:
        converted: list[Bound] = []
        for bound in alternative:
            value = canonical(bound.value, unit)
            if value is None:
                return None
            converted.append(Bound("canonical_value", bound.op, value[0]))
        result.append(tuple(converted))
    return tuple(result)


def reference_predicate(
    name: str,
    code: str,
    modifier: str,
    value: str,
    base_url: str | None,
    is_type: Callable[[str], bool],
) -> Predicate:
    """``Type/id``, a bare id (any target type, or the ``:Type`` modifier's), or a URL."""
    if modifier == "identifier":
        return token_predicate(name, f"{code}:identifier", "", value)
    target_type = modifier or None
    text = unescape(value)
    if base_url and text.startswith(base_url.rstrip("/") + "/"):
        text = text[len(base_url.rstrip("/")) + 1 :]
    if text.startswith(("http://", "https://", "urn:")):
        return ReferenceMatch(code, url=text)
    segments = text.split("/")
    if len(segments) >= 4 and segments[-2] == "_history":
        segments = segments[:-2]
    if len(segments) == 2:
        kind, identifier = segments
        if target_type and kind != target_type:
            raise bad(name, f"{value[:60]!r} is not a {target_type}", "rofecare-2104")
        if not is_type(kind) or not is_valid_id(identifier):
            raise bad(name, f"{value[:60]!r} is not Type/id", "rofecare-2104")
        return ReferenceMatch(code, kind, identifier)
    if len(segments) == 1 and is_valid_id(text):
        return ReferenceMatch(code, target_type, text)
    if len(segments) == 1 and "|" in text:  # a canonical with a version
        return ReferenceMatch(code, url=text)
    raise bad(name, f"{value[:60]!r} is not Type/id, an id or a URL", "rofecare-2104")


def uri_predicate(name: str, code: str, modifier: str, value: str) -> Predicate:
    value = unescape(value)
    if modifier == "above":
        return UriMatch(code, "above", value)
    if modifier == "below":
        return UriMatch(code, "below", value)
    return UriMatch(code, "eq", value)
