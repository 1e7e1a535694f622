"""Search at type, system and compartment level (https://hl7.org/fhir/R4/search.html).

The parser turns parameters into a backend-neutral plan; the store compiles and runs it.
Conditional interactions use the same engine (``ResourceService.find``) in strict mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fhir_server.definitions import Definitions
from fhir_server.definitions.registry import load_patient_compartment
from fhir_server.errors import BadRequest, NotFound
from fhir_server.model.ids import is_valid_id
from fhir_server.search.parser import ParsedSearch
from fhir_server.search.plan import CompartmentMatch
from fhir_server.services.resources import NOT_STORED, ResourceService
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import ResourceStore, SearchPage

COMPARTMENT_TYPES = ("Patient",)


@dataclass(frozen=True)
class SearchResult:
    parsed: ParsedSearch
    page: SearchPage


class SearchService:
    def __init__(
        self,
        store: ResourceStore,
        resources: ResourceService,
        index: SearchIndex,
        definitions: Definitions,
    ) -> None:
        self._store = store
        self._resources = resources
        self._index = index
        self._definitions = definitions

    async def search(
        self,
        resource_types: Sequence[str],
        pairs: Sequence[tuple[str, str]],
        *,
        strict: bool = False,
        base_url: str | None = None,
    ) -> SearchResult:
        """Type-level search for one type; system-level for several (or none: all types)."""
        for resource_type in resource_types:
            self._resources.check_type(resource_type)
        await self._resources.refresh_search_parameters()
        parsed = self._index.parser.parse(resource_types, pairs, strict=strict, base_url=base_url)
        return SearchResult(parsed, await self._store.search(parsed.plan))

    def system_types(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        """The types of ``_type`` (comma-separated or repeated); () for every type."""
        types: list[str] = []
        for name, value in pairs:
            if name == "_type":
                types.extend(item.strip() for item in value.split(",") if item.strip())
        for resource_type in types:
            if not self._definitions.is_resource_type(resource_type) or (
                resource_type in NOT_STORED
            ):
                raise BadRequest(
                    f"_type names an unknown resource type {resource_type[:60]!r}",
                    rofecare_code="rofecare-2115",
                )
        return tuple(dict.fromkeys(types))

    async def compartment(
        self,
        compartment_type: str,
        compartment_id: str,
        resource_type: str | None,
        pairs: Sequence[tuple[str, str]],
        *,
        strict: bool = False,
        base_url: str | None = None,
    ) -> SearchResult:
        """``GET Patient/{id}/{type}`` or ``Patient/{id}/*``: search within the resources the
        Patient CompartmentDefinition links to that patient."""
        if compartment_type not in COMPARTMENT_TYPES:
            raise NotFound(
                f"{compartment_type} is not a supported compartment (supported: Patient)",
                rofecare_code="rofecare-2301",
            )
        if not is_valid_id(compartment_id):
            raise BadRequest("Invalid compartment id", rofecare_code="rofecare-1105")
        links = load_patient_compartment()
        if resource_type is not None:
            self._resources.check_type(resource_type)
            if resource_type not in links:
                raise NotFound(
                    f"{resource_type} is not in the {compartment_type} compartment",
                    rofecare_code="rofecare-2302",
                )
            types: tuple[str, ...] = (resource_type,)
        else:
            types = tuple(sorted(links))
        await self._resources.refresh_search_parameters()
        parsed = self._index.parser.parse(types, pairs, strict=strict, base_url=base_url)
        member = CompartmentMatch(
            tuple((kind, code) for kind in types for code in links[kind]),
            compartment_type,
            compartment_id,
        )
        plan = replace(parsed.plan, where=((member,), *parsed.plan.where))
        parsed.plan = plan
        return SearchResult(parsed, await self._store.search(plan))
