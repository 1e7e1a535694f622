"""Search at type, system and compartment level (https://hl7.org/fhir/R4/search.html).

The parser turns parameters into a backend-neutral plan; the store compiles and runs it.
Conditional interactions use the same engine (``ResourceService.find``) in strict mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from fhir_server.auth import policy
from fhir_server.auth.context import current_access
from fhir_server.definitions import Definitions
from fhir_server.definitions.registry import load_patient_compartment
from fhir_server.errors import BadRequest, Forbidden, NotFound
from fhir_server.model.ids import is_valid_id
from fhir_server.search.parser import ParsedSearch
from fhir_server.search.plan import CompartmentMatch
from fhir_server.search.values import ReferenceEntry
from fhir_server.services.linked import LinkedQuery, Links, linked_plan
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
        parsed.plan = policy.confine_plan(parsed.plan)
        return SearchResult(parsed, self.visible(await self._store.search(parsed.plan)))

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
            access = current_access()
            if access is not None:
                # ``*``: the types of the compartment the token may search (a clinician's
                # token has no Account scope, yet opens Patient/x/*).
                types = tuple(kind for kind in types if access.scopes.allows(kind, "s"))
                if not types:
                    raise Forbidden(
                        "The access token grants search on none of the compartment's types",
                        rofecare_code="rofecare-3403",
                    )
        await self._resources.refresh_search_parameters()
        parsed = self._index.parser.parse(types, pairs, strict=strict, base_url=base_url)
        member = CompartmentMatch(
            tuple((kind, code) for kind in types for code in links[kind]),
            compartment_type,
            compartment_id,
        )
        plan = policy.confine_plan(replace(parsed.plan, where=((member,), *parsed.plan.where)))
        parsed.plan = plan
        return SearchResult(parsed, self.visible(await self._store.search(plan)))

    # -- linked resources (the engine of $everything) ------------------------------------

    async def linked(self, query: LinkedQuery) -> SearchResult:
        """One page of the resources linked to a focal resource (see ``linked.py``)."""
        if not query.links:
            raise ValueError("A linked search needs at least one link")
        plan = linked_plan(query, self._index.registry)
        access = current_access()
        if access is not None:
            # $everything: the types the token may not search drop out of the plan, so the
            # pages stay full; confined ones are narrowed to the launch patient.
            allowed = tuple(kind for kind in plan.resource_types if access.scopes.allows(kind, "s"))
            if not allowed:
                raise Forbidden(
                    "The access token grants search on none of the linked resource types",
                    rofecare_code="rofecare-3403",
                )
            plan = policy.confine_plan(replace(plan, resource_types=allowed))
        return SearchResult(ParsedSearch(plan), self.visible(await self._store.search(plan)))

    def visible(self, page: SearchPage) -> SearchPage:
        """``page`` without the included resources the current access may not read:
        ``_include``/``_revinclude`` must not open a door the scopes keep shut."""
        access = current_access()
        if access is None or not page.included:
            return page
        kept = []
        for version in page.included:
            kind = version.resource_type
            if not access.scopes.allows(kind, "r"):
                continue
            if policy.confining_patient(kind, "read") is not None and version.body is not None:
                body = orjson.loads(version.body)
                try:
                    policy.check_in_compartment(
                        kind, body, self.references(body, self._all_codes(kind)), "read"
                    )
                except Forbidden:
                    continue
            kept.append(version)
        return replace(page, included=kept)

    def _all_codes(self, resource_type: str) -> tuple[str, ...]:
        return load_patient_compartment().get(resource_type, ())

    @staticmethod
    def patient_compartment() -> Links:
        """The official R4 Patient CompartmentDefinition: type -> parameters."""
        return load_patient_compartment()

    def reference_links(self, target_type: str, codes: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Per resource type, those of the reference parameters ``codes`` that may point
        at a ``target_type`` (a compartment drawn from the search parameters in force)."""
        found: dict[str, tuple[str, ...]] = {}
        for resource_type in sorted(self._definitions.resource_types - NOT_STORED):
            usable = []
            for code in codes:
                parameter = self._index.registry.get(resource_type, code)
                if (
                    parameter is not None
                    and parameter.type == "reference"
                    and (not parameter.targets or target_type in parameter.targets)
                ):
                    usable.append(code)
            if usable:
                found[resource_type] = tuple(usable)
        return found

    def references(self, resource: Mapping[str, Any], codes: Sequence[str]) -> set[tuple[str, str]]:
        """The (type, id) of the relative references ``resource`` holds in the reference
        parameters ``codes``, read as the indexer reads them for search."""
        if not codes:
            return set()
        wanted = set(codes)
        return {
            (entry.target_type, entry.target_id)
            for entry in self._index.indexer.entries(dict(resource))
            if isinstance(entry, ReferenceEntry)
            and entry.param in wanted
            and entry.target_type is not None
            and entry.target_id is not None
        }
