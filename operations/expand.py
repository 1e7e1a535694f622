"""``ValueSet/$expand`` and ``ValueSet/[id]/$expand``.

https://hl7.org/fhir/R4/valueset-operation-expand.html: the ValueSet with an ``expansion``
listing its codes (flat, in the order of its definition), filtered and paged:

- ``filter``: a code matches when every word of the filter is found, case-insensitively,
  in its code or its display (``chol vibr`` finds "Cholera due to Vibrio cholerae"). At
  most :data:`MAX_FILTER` characters and :data:`MAX_WORDS` words.
- ``offset`` (default 0) and ``count``: the page; ``expansion.total`` counts every match,
  ``expansion.offset`` is the page's start, and ``expansion.parameter`` echoes the filter
  and paging used (https://hl7.org/fhir/R4/valueset-definitions.html#ValueSet.expansion).
- An expansion of more than :data:`MAX_EXPANSION` codes (all of ICD-10 is 12,542) is
  refused without ``count`` (400, too-costly), as HAPI refuses one past its maximum
  expansion size; ``count`` is capped at that limit, so a client pages through it.
- A value set that is not enumerable here (drawing on SNOMED CT, LOINC, or a code system
  held only as a fragment) is 422, naming the code systems that are missing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fhir_server.errors import BadRequest, Unprocessable
from fhir_server.services.operations import (
    Operation,
    OperationCall,
    OperationRegistry,
    OperationServices,
    ResourceAnswer,
)
from operations.terminology_definitions import EXPAND
from operations.terminology_parameters import (
    BAD_FILTER,
    BAD_PAGE,
    NOT_ENUMERABLE,
    TOO_MANY,
    TooCostly,
    find_value_set,
)
from terminology import provider
from terminology.valueset import Entry, ValueSet

MAX_EXPANSION = 10_000
"""The most codes one answer holds: a page of a bigger expansion needs ``count``."""
MAX_FILTER = 200
MAX_WORDS = 10


def register(registry: OperationRegistry) -> None:
    registry.register(Operation(EXPAND, expand, levels=frozenset({"type", "instance"})))


async def expand(services: OperationServices, call: OperationCall) -> ResourceAnswer:
    arguments = call.arguments
    value_set = await find_value_set(services, call, "expand")
    text: str | None = arguments.first("filter")
    words = _words(text)
    offset: int = arguments.first("offset") or 0
    count: int | None = arguments.first("count")
    for name, value in (("offset", offset), ("count", count)):
        if value is not None and value < 0:
            raise BadRequest(
                f"{name} must not be negative", expression=name, rofecare_code=BAD_PAGE
            )
    matches = value_set.search(words) if words else value_set.expansion()
    if matches is None:
        raise Unprocessable(
            f"{value_set.label} cannot be expanded here: {_missing(value_set)}",
            rofecare_code=NOT_ENUMERABLE,
        )
    if count is None and len(matches) > MAX_EXPANSION:
        raise TooCostly(
            f"{value_set.label} has {len(matches)} codes{' matching' if words else ''}, more "
            f"than the {MAX_EXPANSION} one answer holds: page with count and offset, or "
            "narrow the filter",
            rofecare_code=TOO_MANY,
        )
    size = len(matches) if count is None else min(count, MAX_EXPANSION)
    page = matches[offset : offset + size]
    used: list[dict[str, Any]] = []
    if text is not None:
        used.append({"name": "filter", "valueString": text})
    if offset or count is not None:
        used.append({"name": "offset", "valueInteger": offset})
    if count is not None:
        used.append({"name": "count", "valueInteger": size})
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "total": len(matches),
        "offset": offset,
    }
    if used:
        expansion["parameter"] = used
    if page:
        expansion["contains"] = [_contains(entry) for entry in page]
    return ResourceAnswer({**_metadata(value_set), "expansion": expansion})


def _words(text: str | None) -> list[str]:
    if text is None:
        return []
    if len(text) > MAX_FILTER:
        raise BadRequest(
            f"filter is longer than {MAX_FILTER} characters",
            expression="filter",
            rofecare_code=BAD_FILTER,
        )
    words = text.casefold().split()
    if len(words) > MAX_WORDS:
        raise BadRequest(
            f"filter has more than {MAX_WORDS} words", expression="filter", rofecare_code=BAD_FILTER
        )
    return words


def _contains(entry: Entry) -> dict[str, Any]:
    item: dict[str, Any] = {"system": entry.system}
    if entry.version:
        item["version"] = entry.version
    item["code"] = entry.code
    if entry.display:
        item["display"] = entry.display
    return item


def _metadata(value_set: ValueSet) -> dict[str, Any]:
    """The ValueSet's identity, as the answer repeats it."""
    fields = {
        "id": value_set.resource_id,
        "url": value_set.url,
        "version": value_set.version,
        "name": value_set.name,
        "title": value_set.title,
        "status": value_set.status,
    }
    return {"resourceType": "ValueSet", **{k: v for k, v in fields.items() if v is not None}}


def _missing(value_set: ValueSet) -> str:
    """Which of the value set's code systems are not held completely here."""
    terminology = provider()
    missing = []
    for system in sorted(value_set.systems()):
        held = terminology.code_system(system)
        if held is None or not held.complete:
            missing.append(system)
    if not missing:
        return "it uses a filter or an imported value set this server cannot evaluate"
    return "it draws on code systems not held completely here (" + ", ".join(missing) + ")"
