"""Definitions stored on the server that change how it works, followed by every worker.

A SearchParameter a client stores changes what the next write indexes; a StructureDefinition
changes what a resource declaring it is held to. Each worker process keeps them compiled in
memory and, before the work that needs them, asks the store for the latest change of that
type (one index probe, ~10 us): a definition is in force on every worker as soon as its
write is acknowledged, where a timed refresh would leave a window of staleness.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from fhir_server.search.plan import SearchPlan
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import ResourceStore
from fhir_server.validation.profiles import ProfileValidation

PAGE = 500


class StoredDefinitions:
    def __init__(
        self,
        store: ResourceStore,
        search_index: SearchIndex,
        profiles: ProfileValidation | None,
    ) -> None:
        self._store = store
        self._search_index = search_index
        self._profiles = profiles
        self._seen: dict[str, int] = {}  # resource type -> the latest change when loaded
        self._reloads = {"SearchParameter": asyncio.Lock(), "StructureDefinition": asyncio.Lock()}

    async def reload_search_parameters(self) -> None:
        """Put the stored SearchParameter resources in force (at start and after each write
        of one), so that new writes index them; older resources need ``rofecare reindex``."""
        # Read the marker first: a SearchParameter written while loading makes the next
        # refresh load again, never hides from it.
        self._seen["SearchParameter"] = await self._store.latest_change("SearchParameter")
        self._search_index.use_stored(await self._all("SearchParameter"))

    async def refresh_search_parameters(self) -> None:
        """Follow SearchParameters written by another worker sharing the store (a write in
        this process reloads at once), before each search and each indexing."""
        if await self._changed("SearchParameter"):
            async with self._reloads["SearchParameter"]:
                if await self._changed("SearchParameter"):
                    await self.reload_search_parameters()

    async def refresh_profiles(self) -> None:
        """Put the StructureDefinitions stored on the server in force for the resources
        that declare them, when one was written since the last look."""
        if self._profiles is None or not await self._changed("StructureDefinition"):
            return
        async with self._reloads["StructureDefinition"]:
            latest = await self._store.latest_change("StructureDefinition")
            if latest == self._seen.get("StructureDefinition"):
                return
            self._profiles.registry.use_stored(await self._all("StructureDefinition"))
            self._seen["StructureDefinition"] = latest

    async def _changed(self, resource_type: str) -> bool:
        latest = await self._store.latest_change(resource_type)
        return latest != self._seen.get(resource_type, -1)

    async def _all(self, resource_type: str) -> list[dict[str, Any]]:
        definitions: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            plan = SearchPlan((resource_type,), (), count=PAGE, cursor=cursor, total="none")
            page = await self._store.search(plan)
            definitions.extend(orjson.loads(v.body) for v in page.matches if v.body)
            cursor = page.next_cursor
            if cursor is None:
                return definitions
