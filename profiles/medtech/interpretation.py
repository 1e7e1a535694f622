"""The interpretation of a numeric result against its reference ranges (H, L, HH, LL, N).

The ranges are the ones the result carries (https://hl7.org/fhir/R4/observation-definitions.html#Observation.referenceRange):
a normal range (no ``type``, or ``normal``) gives H and L, a critical range (Rofecare's
``reference-range-type#critical``) gives HH and LL. A range restricted to a population
(``appliesTo``, ``age``) is not used: the server cannot tell whether the patient is in it,
and a wrong flag is worse than none. Values and bounds in different UCUM units are
compared in canonical units; a bound that cannot be compared is ignored.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.ucum import canonical
from profiles.support import codings

INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
RANGE_TYPE = "http://rofecare.com/fhir/CodeSystem/reference-range-type"
RANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
UCUM = "http://unitsofmeasure.org"
DERIVED = frozenset({"H", "L", "HH", "LL", "N"})
DISPLAY = {"H": "High", "L": "Low", "HH": "Critical high", "LL": "Critical low", "N": "Normal"}


def interpret(value: Any, ranges: Any) -> str | None:
    """H, L, HH, LL or N for a Quantity ``value``; None when no usable range applies."""
    if not isinstance(value, dict) or not isinstance(value.get("value"), (int, float)):
        return None
    normal, critical = _ranges(ranges)
    if normal is None and critical is None:
        return None
    for low_code, high_code, bounds in (("LL", "HH", critical), ("L", "H", normal)):
        if bounds is None:
            continue
        low, high = bounds
        if low is not None and _below(value, low):
            return low_code
        if high is not None and _below(high, value):
            return high_code
    return "N" if normal is not None else None


def _ranges(ranges: Any) -> tuple[Any, Any]:
    normal = critical = None
    usable = [
        item
        for item in (ranges if isinstance(ranges, list) else [])
        if isinstance(item, dict) and not item.get("appliesTo") and not item.get("age")
    ]
    normals = [item for item in usable if _kind(item) == "normal"]
    criticals = [item for item in usable if _kind(item) == "critical"]
    if len(normals) == 1:
        normal = (normals[0].get("low"), normals[0].get("high"))
    if len(criticals) == 1:
        critical = (criticals[0].get("low"), criticals[0].get("high"))
    return normal, critical


def _kind(item: dict[str, Any]) -> str | None:
    found = set(codings(item.get("type")))
    if (RANGE_TYPE, "critical") in found:
        return "critical"
    if not found or (RANGE_MEANING, "normal") in found:
        return "normal"
    return None  # treatment, therapeutic...: not a reference for abnormality


def _below(left: Any, right: Any) -> bool:
    """Is quantity ``left`` strictly below ``right``? False when they cannot be compared."""
    pair = _comparable(left, right)
    return pair is not None and pair[0] < pair[1]


def _comparable(left: Any, right: Any) -> tuple[float, float] | None:
    if not isinstance(left, dict) or not isinstance(right, dict):
        return None
    a, b = left.get("value"), right.get("value")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    unit_a, unit_b = _unit(left), _unit(right)
    if unit_a == unit_b or unit_a is None or unit_b is None:
        return float(a), float(b)
    if left.get("system", UCUM) != UCUM or right.get("system", UCUM) != UCUM:
        return None
    first, second = canonical(float(a), unit_a), canonical(float(b), unit_b)
    if first is None or second is None or first[1] != second[1]:
        return None
    return first[0], second[0]


def _unit(quantity: dict[str, Any]) -> str | None:
    code = quantity.get("code", quantity.get("unit"))
    return code if isinstance(code, str) else None


def with_interpretation(concepts: Any, code: str | None) -> list[dict[str, Any]] | None:
    """``Observation.interpretation`` with the server's H/L/HH/LL/N coding in place of a
    previous one (the other codings a laboratory sent are kept); None for no change: when
    the server cannot interpret, what the laboratory said stands."""
    if code is None:
        return None
    kept = [
        concept
        for concept in (concepts if isinstance(concepts, list) else [])
        if not any(system == INTERPRETATION and c in DERIVED for system, c in codings(concept))
    ]
    coding = {"system": INTERPRETATION, "code": code, "display": DISPLAY[code]}
    return [{"coding": [coding], "text": DISPLAY[code]}, *kept]
