"""The FHIR R4 search contract as data: (fixtures, query, expected ids) cases.

Each case is derived from https://hl7.org/fhir/R4/search.html and names the rule it checks in
``note`` (with the page anchor). A runner stores every fixture with PUT (ids kept) in a fresh
store, runs ``GET [base]/{resource_type}?{query}`` and compares the ids of the matches with
``expected`` (as a set, or as a sequence when ``ordered``). Every fixture set holds resources that
must *not* match as well, so a case proves both sides of its rule.

Conventions fixed for this server where the specification leaves a choice (each such case says so
in its note; where the specification is ambiguous the cases follow HAPI FHIR's reading):

* The server's time zone is UTC: a search value with a time but no offset is read as UTC, and a
  day such as ``2020-01-01`` is the UTC day (search.html#date, "the servers local time zone should
  be assumed"). Resource values with offsets are converted to UTC before comparison.
* Date, number and quantity prefixes follow the range table of search.html#prefix: a value is the
  half-open interval its precision implies; a Period is explicit and an absent start or end is
  unbounded.
* A prefix compares values, so ``ne`` never matches a resource without one (HAPI FHIR's reading);
  only the token modifier ``:not`` includes resources that have no value.
* ``ap`` cases only use values that overlap the search value (always a match) or lie centuries
  away (never a match), so no answer depends on today's date or the server's tolerance.
* Missing values sort last in both directions (HAPI FHIR's NULLS LAST).

Fixtures are shared between the cases of a module; the runner must not mutate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Resource = dict[str, Any]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
SPEC = "https://hl7.org/fhir/R4/search.html"


@dataclass(frozen=True)
class SearchCase:
    """One search and the ids it must return."""

    name: str  # unique, short, e.g. "date-eq-day-contains-time"
    fixtures: tuple[Resource, ...]  # complete valid R4 resources, each with an explicit "id"
    resource_type: str  # the type searched, e.g. "Observation"
    query: str  # URL query string exactly as a client sends it ('+' encoded as %2B)
    expected: tuple[str, ...]  # ids expected to match (a set unless ordered=True)
    ordered: bool = False  # True for _sort cases: the exact order
    note: str = ""  # the spec rule the case checks, with the search.html anchor


def patient(id_: str, **elements: Any) -> Resource:
    """A Patient; Patient has no required elements, so the caller gives what the case needs."""
    return {"resourceType": "Patient", "id": id_, **elements}


def coding(system: str | None, code: str, display: str | None = None) -> Resource:
    """A Coding; ``system=None`` leaves the system out (the ``|code`` token form matches it)."""
    out: Resource = {"code": code}
    if system is not None:
        out = {"system": system, **out}
    if display is not None:
        out["display"] = display
    return out


def concept(*codings: Resource, text: str | None = None) -> Resource:
    """A CodeableConcept of the given codings."""
    out: Resource = {}
    if codings:
        out["coding"] = list(codings)
    if text is not None:
        out["text"] = text
    return out


def observation(id_: str, code: Resource | None = None, **elements: Any) -> Resource:
    """An Observation (status and code are required in R4); the code defaults to LOINC 8867-4."""
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "code": code if code is not None else concept(coding(LOINC, "8867-4", "Heart rate")),
        **elements,
    }


def quantity(value: float | int, code: str | None, system: str | None = UCUM) -> Resource:
    """A Quantity whose human unit repeats the code, as UCUM quantities usually do."""
    out: Resource = {"value": value}
    if code is not None:
        out["unit"] = code
        if system is not None:
            out["system"] = system
            out["code"] = code
    return out


def ref(target: str) -> Resource:
    """A literal Reference."""
    return {"reference": target}


def narrative(text: str) -> Resource:
    """Resource.text with a generated XHTML div holding ``text``."""
    return {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>',
    }


# The modules import SearchCase and the builders above, so they are imported after them.
from tests.contract.search_cases import (  # noqa: E402
    chains,
    composites,
    dates,
    missing,
    numbers,
    quantities,
    references,
    results,
    strings,
    tokens,
    uris,
)

MODULES = (
    strings,
    tokens,
    dates,
    numbers,
    quantities,
    references,
    uris,
    composites,
    missing,
    chains,
    results,
)
ALL_CASES: tuple[SearchCase, ...] = tuple(case for module in MODULES for case in module.CASES)
