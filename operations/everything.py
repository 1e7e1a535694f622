"""``Patient/[id]/$everything`` and ``Encounter/[id]/$everything``.

https://hl7.org/fhir/R4/patient-operation-everything.html and
https://hl7.org/fhir/R4/encounter-operation-everything.html: a searchset Bundle with the
focal resource, everything linked to it, and the resources those reference that the reader
needs to make sense of them (practitioners, organizations, locations, medications...).

What is returned, precisely:

- **matches**: the focal resource (first, on the first page), then its linked resources:
  for a Patient those of the official Patient CompartmentDefinition, for an Encounter those
  whose ``encounter`` or ``context`` reference parameter points at it. They page with the
  search engine's keyset cursors, so a page never shifts and nothing repeats while data
  changes; resources created after paging began appear on a later page.
- **includes**: what ``_include=*`` of the page's matches gives, except resources of a
  patient compartment: those linked to the focal resource are matches (on some page, unless
  filtered out), and those of another patient are that patient's record, never this one's.
  A Patient is only included as the subject of an Encounter's ``$everything``. Like
  ``_include``, a resource referenced from several pages is included on each of them.
- ``_type`` and ``_since`` filter every resource returned, the focal one and includes too;
  ``start``/``end`` filter the Patient's linked resources on their care date
  (``everything_definitions.CARE_DATES``); types without one are not date-filtered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from fhir_server.errors import BadRequest
from fhir_server.services.linked import CareDates, LinkedQuery, Links
from fhir_server.services.operations import (
    Operation,
    OperationCall,
    OperationRegistry,
    OperationServices,
    Searchset,
    StoredVersion,
)
from operations.everything_definitions import CARE_DATES, ENCOUNTER_EVERYTHING, PATIENT_EVERYTHING

FIRST_LINKED = "linked"
"""The ``_cursor`` of the first page of linked resources when the first page (``_count=1``)
held only the focal resource; the search engine's own cursors are base64 JSON, never this."""
ENCOUNTER_LINKS = ("encounter", "context")
NOT_THE_RECORD = frozenset({"AuditEvent"})
"""In the Patient compartment but not the patient's record: the audit trail of who read or
changed it is the auditor's (``AuditEvent?patient=``), not what a clinician opens."""

Key = tuple[str, str]


def register(registry: OperationRegistry) -> None:
    registry.register(Operation(PATIENT_EVERYTHING, patient_everything))
    registry.register(Operation(ENCOUNTER_EVERYTHING, encounter_everything))


async def patient_everything(services: OperationServices, call: OperationCall) -> Searchset:
    focal = await _focal(services, call)
    care_dates = _care_dates(call)
    links = {
        kind: codes
        for kind, codes in services.search.patient_compartment().items()
        if kind not in NOT_THE_RECORD
    }
    record = _Record(focal, links, frozenset())
    return await _everything(services, call, record, care_dates)


async def encounter_everything(services: OperationServices, call: OperationCall) -> Searchset:
    focal = await _focal(services, call)
    links = services.search.reference_links("Encounter", ENCOUNTER_LINKS)
    # The encounter's own patient is context for its record; other patients' records are
    # not, even when one of its resources points at them.
    subject = services.search.patient_compartment().get("Encounter", ())
    patients = _patients(services.search.references(_body(focal), subject))
    return await _everything(services, call, _Record(focal, links, patients), None)


@dataclass(frozen=True)
class _Filters:
    """``_type`` (None: every type) and ``_since``, which apply to every resource returned."""

    types: frozenset[str] | None
    since: datetime | None

    def keep(self, version: StoredVersion) -> bool:
        if self.types is not None and version.resource_type not in self.types:
            return False
        return self.since is None or version.last_updated >= self.since


@dataclass(frozen=True)
class _Record:
    """The focal resource, what links resources to it, and whose patient record it is."""

    focal: StoredVersion
    links: Links
    allowed_patients: frozenset[str]

    @property
    def key(self) -> Key:
        return (self.focal.resource_type, self.focal.resource_id)


async def _focal(services: OperationServices, call: OperationCall) -> StoredVersion:
    """The focal resource as a read sees it: 404 unknown, 410 deleted, 400 bad id."""
    assert call.resource_id is not None  # the registry runs these at instance level only
    return await services.resources.read(call.resource_type, call.resource_id)


async def _everything(
    services: OperationServices,
    call: OperationCall,
    record: _Record,
    care_dates: CareDates | None,
) -> Searchset:
    arguments = call.arguments
    filters = _Filters(_types(services, arguments.all("_type")), arguments.first("_since"))
    requested: int | None = arguments.first("_count")
    if requested is not None and requested < 0:
        raise BadRequest(
            "_count must not be negative", expression="_count", rofecare_code="rofecare-2502"
        )
    count = call.page_size.of(requested)
    focal = record.focal
    show_focal = call.cursor is None and count > 0 and filters.keep(focal)
    member_links = {
        kind: codes
        for kind, codes in record.links.items()
        if filters.types is None or kind in filters.types
    }
    matches = [focal] if show_focal else []
    candidates: list[StoredVersion] = []
    total, next_cursor = 0, None
    if member_links:
        query = LinkedQuery(
            focal.resource_type,
            focal.resource_id,
            member_links,
            since=filters.since,
            care_dates=care_dates,
            count=count - 1 if show_focal else count,
            cursor=None if call.cursor in (None, FIRST_LINKED) else call.cursor,
        )
        page = (await services.search.linked(query)).page
        matches += [m for m in page.matches if (m.resource_type, m.resource_id) != record.key]
        candidates += page.included
        total, next_cursor = page.total or 0, page.next_cursor
        if show_focal and query.count == 0 and total:
            next_cursor = FIRST_LINKED
    if show_focal:
        candidates = await _focal_references(services, focal) + candidates
    parameters = [(name, value) for name, value in arguments.query if name != "_count"]
    return Searchset(
        matches=matches,
        included=_context(services, record, candidates, matches, filters),
        total=total + (1 if filters.keep(focal) else 0),
        next_cursor=next_cursor,
        link_parameters=[*parameters, ("_count", str(count))],
        issues=arguments.ignored,
    )


def _types(services: OperationServices, values: Sequence[str]) -> frozenset[str] | None:
    """``_type`` as a set of types (None: every type); 400 rofecare-2115 for an unknown type,
    as in search."""
    if not values:
        return None
    return frozenset(services.search.system_types([("_type", value) for value in values]))


def _care_dates(call: OperationCall) -> CareDates | None:
    """The [start, end) window of ``start`` and ``end``: each date covers its whole
    precision (``end=2024`` runs to the end of 2024)."""
    start, end = call.arguments.first("start"), call.arguments.first("end")
    if start is None and end is None:
        return None
    low = start[0] if start is not None else None
    high = end[1] if end is not None else None
    if low is not None and high is not None and low >= high:
        raise BadRequest("start is after end", expression="start", rofecare_code="rofecare-2508")
    return CareDates(CARE_DATES, low, high)


async def _focal_references(
    services: OperationServices, focal: StoredVersion
) -> list[StoredVersion]:
    """What the focal resource itself references (a patient's general practitioner and
    managing organization; an encounter's participants, locations, service provider...)."""
    result = await services.search.search(
        (focal.resource_type,),
        [("_id", focal.resource_id), ("_include", "*"), ("_total", "none"), ("_count", "1")],
    )
    return result.page.included


def _context(
    services: OperationServices,
    record: _Record,
    candidates: Iterable[StoredVersion],
    matches: Sequence[StoredVersion],
    filters: _Filters,
) -> list[StoredVersion]:
    """The included resources this record may carry, each once (see the module docstring)."""
    compartment = services.search.patient_compartment()
    seen: set[Key] = {record.key, *((m.resource_type, m.resource_id) for m in matches)}
    kept: list[StoredVersion] = []
    for version in candidates:
        key = (version.resource_type, version.resource_id)
        if key in seen or not filters.keep(version):
            continue
        seen.add(key)
        resource = _body(version)
        kind = version.resource_type
        if record.key in services.search.references(resource, record.links.get(kind, ())):
            continue  # linked to the focal resource: a match on its own page, or filtered
        if kind == "Patient":
            patients = frozenset({version.resource_id})
        else:
            patients = _patients(services.search.references(resource, compartment.get(kind, ())))
        if patients - record.allowed_patients:
            continue  # another patient's record
        kept.append(version)
    return kept


def _patients(references: Iterable[Key]) -> frozenset[str]:
    return frozenset(target_id for target_type, target_id in references if target_type == "Patient")


def _body(version: StoredVersion) -> Mapping[str, Any]:
    assert version.body is not None  # reads and searches return current, undeleted versions
    resource: dict[str, Any] = orjson.loads(version.body)
    return resource
