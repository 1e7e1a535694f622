"""Resources linked to one focal resource, as a search plan: the engine of ``$everything``.

A compartment (https://hl7.org/fhir/R4/compartmentdefinition.html) is "the resources whose
listed reference parameters point at the focal resource". Expressed as a ``CompartmentMatch``
plan, it runs through the store's ordinary search, so it pages with the same keyset cursors
(a page never shifts while data changes), counts its total and follows references with
``_include=*`` like any search.

Care-date windows (``Patient/$everything?start=&end=``) need a different date parameter per
resource type, while a plan's parameter names every searched type at once (``date`` would
also select MedicationRequest's dosage dates). The window is therefore one OR of the date
parameters in use, plus, for each type that also defines another of those names, a guard
"(its own parameter is in the window) OR (it is not of that type)". "Not of that type" is a
``CompartmentMatch`` restricted to the other types' links: within the compartment it selects
exactly the resources of the other types. Types without a care date are not filtered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from fhir_server.model.instant import to_micros
from fhir_server.search.plan import (
    AnyOf,
    Bound,
    CompartmentMatch,
    Include,
    Predicate,
    RangeMatch,
    SearchPlan,
)
from fhir_server.search.registry import SearchParameterRegistry

Links = Mapping[str, tuple[str, ...]]
"""Resource type -> its reference parameters that point at the focal resource."""


@dataclass(frozen=True)
class CareDates:
    """Keep resources whose care date (``parameters[type]``, a date parameter) overlaps
    [start, end); an open end is unbounded. Types absent from ``parameters`` are kept."""

    parameters: Mapping[str, str]
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class LinkedQuery:
    """One page of the resources linked to ``focal_type/focal_id`` through ``links``.

    ``since`` keeps resources with ``meta.lastUpdated`` >= it. ``include_references`` adds,
    like ``_include=*``, the resources the page's matches reference.
    """

    focal_type: str
    focal_id: str
    links: Links
    since: datetime | None = None
    care_dates: CareDates | None = None
    count: int = 50
    cursor: str | None = None
    include_references: bool = True


def linked_plan(query: LinkedQuery, registry: SearchParameterRegistry) -> SearchPlan:
    types = tuple(sorted(query.links))
    where: list[AnyOf] = [(_member(query, types),)]
    if query.since is not None:
        since = Bound("low", ">=", to_micros(query.since))
        where.append((RangeMatch("_lastUpdated", "lastUpdated", ((since,),)),))
    if query.care_dates is not None:
        where += _care_date_groups(query, query.care_dates, types, registry)
    includes = (Include("*", "*", None, False, False),) if query.include_references else ()
    return SearchPlan(
        resource_types=types,
        where=tuple(where),
        count=query.count,
        cursor=query.cursor,
        total="accurate",
        includes=includes,
    )


def _member(query: LinkedQuery, types: tuple[str, ...]) -> CompartmentMatch:
    """Linked to the focal resource through a link of one of ``types``."""
    links = tuple((kind, code) for kind in types for code in query.links.get(kind, ()))
    return CompartmentMatch(links, query.focal_type, query.focal_id)


def _care_date_groups(
    query: LinkedQuery, care: CareDates, types: tuple[str, ...], registry: SearchParameterRegistry
) -> list[AnyOf]:
    if care.start is None and care.end is None:
        return []
    dated = {
        kind: care.parameters[kind]
        for kind in types
        if kind in care.parameters and _is_date(registry, kind, care.parameters[kind])
    }
    if not dated:
        return []
    window = _window(care)
    codes = sorted(set(dated.values()))
    alternatives: list[Predicate] = [RangeMatch(code, "date", window) for code in codes]
    undated = tuple(kind for kind in types if kind not in dated)
    if undated:
        alternatives.append(_member(query, undated))
    groups: list[AnyOf] = [tuple(alternatives)]
    for kind, code in sorted(dated.items()):
        if any(other != code and _is_date(registry, kind, other) for other in codes):
            others = tuple(other for other in types if other != kind)
            groups.append((_member(query, others), RangeMatch(code, "date", window)))
    return groups


def _window(care: CareDates) -> tuple[tuple[Bound, ...], ...]:
    """Stored [low, high) overlaps [start, end): low < end and high > start."""
    bounds: list[Bound] = []
    if care.end is not None:
        bounds.append(Bound("low", "<", to_micros(care.end)))
    if care.start is not None:
        bounds.append(Bound("high", ">", to_micros(care.start)))
    return (tuple(bounds),)


def _is_date(registry: SearchParameterRegistry, resource_type: str, code: str) -> bool:
    parameter = registry.get(resource_type, code)
    return parameter is not None and parameter.type == "date"
