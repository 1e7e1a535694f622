"""Running a search plan on MongoDB: matching, sorting, keyset paging, totals, includes.

Semantics follow the SQLite store's (storage/sqlite/search.py) so that one contract suite
holds for both: results in creation order (``k``) without ``_sort``; with it, by each
parameter's lowest value ascending and highest descending (kept per resource at write time
in ``sk``, documents.search_fields), resources without a value last; cursors are keysets.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.plan import Include, SearchPlan, SortKey
from fhir_server.storage.base import SearchPage, StoredVersion
from fhir_server.storage.cursors import decode_cursor, page_of
from fhir_server.storage.mongo.documents import stored_version
from fhir_server.storage.mongo.query import MqlBuilder, live

MAX_INCLUDED = 5_000
MAX_INCLUDE_ROUNDS = 4  # :iterate follows references at most this many steps
_LAST_TEXT = "\U0010ffff"
_LAST_NUMBER = 9e307
_TEXT_KINDS = frozenset({"string", "token", "reference", "uri"})


class MongoSearch:
    """One search over the ``current`` collection (an ``AsyncCollection``)."""

    def __init__(self, current: Any, session: Any = None, max_time_ms: int | None = None) -> None:
        self._current = current
        self._session = session
        self._max_time_ms = max_time_ms

    async def find(self, condition: dict[str, Any], projection: dict[str, int]) -> list[Any]:
        options: dict[str, Any] = {"session": self._session}
        if self._max_time_ms is not None:
            options["max_time_ms"] = self._max_time_ms
        cursor = self._current.find(condition, projection, **options)
        return [document async for document in cursor]

    async def run(self, plan: SearchPlan) -> SearchPage:
        direction, after = decode_cursor(plan.cursor, len(plan.sort) + 1)
        condition = await self.condition(plan)
        total = None
        if plan.total == "bounded":
            total = await self._count(condition, plan.total_limit + 1)
            total = None if total > plan.total_limit else total
        elif plan.total != "none":
            total = await self._count(condition, None)
        if plan.count == 0:
            return SearchPage([], [], total, None, None)
        rows = await self._page(plan, condition, direction, after)
        rows, next_cursor, previous_cursor = page_of(
            rows, plan.count, direction, after, lambda row: _edge(row, len(plan.sort))
        )
        matches = [stored_version(row) for row in rows]
        included = await self._includes(plan.includes, rows) if plan.includes else []
        return SearchPage(matches, included, total, next_cursor, previous_cursor)

    async def condition(self, plan: SearchPlan) -> dict[str, Any]:
        builder = MqlBuilder(self.find)
        where = await builder.where(plan.where, plan.resource_types)
        scope = live(plan.resource_types)
        return {"$and": [scope, where]} if where else scope

    async def _count(self, condition: dict[str, Any], limit: int | None) -> int:
        options: dict[str, Any] = {"session": self._session}
        if limit is not None:
            options["limit"] = limit
        if self._max_time_ms is not None:
            options["maxTimeMS"] = self._max_time_ms
        return int(await self._current.count_documents(condition, **options))

    async def _page(
        self,
        plan: SearchPlan,
        condition: dict[str, Any],
        direction: str,
        after: list[Any] | None,
    ) -> list[dict[str, Any]]:
        keys = {f"s{index}": _sort_value(key) for index, key in enumerate(plan.sort)}
        names = [*keys, "k"]
        descending = [key.descending for key in plan.sort] + [False]
        if direction == "previous":
            descending = [not flag for flag in descending]
        pipeline: list[dict[str, Any]] = [{"$match": condition}]
        if keys:
            pipeline.append({"$addFields": keys})
        if after is not None:
            pipeline.append({"$match": _keyset(names, descending, after)})
        order = {name: -1 if flag else 1 for name, flag in zip(names, descending, strict=True)}
        pipeline += [{"$sort": order}, {"$limit": plan.count + 1}]
        options: dict[str, Any] = {"session": self._session}
        if self._max_time_ms is not None:
            options["maxTimeMS"] = self._max_time_ms
        cursor = await self._current.aggregate(pipeline, **options)
        return [document async for document in cursor]

    # -- _include and _revinclude ---------------------------------------------------------

    async def _includes(
        self, includes: tuple[Include, ...], matches: list[dict[str, Any]]
    ) -> list[StoredVersion]:
        seen = {document["_id"] for document in matches}
        included: list[StoredVersion] = []
        frontier = matches
        for round_number in range(MAX_INCLUDE_ROUNDS):
            active = [item for item in includes if round_number == 0 or item.iterate]
            if not active or not frontier:
                break
            found: list[dict[str, Any]] = []
            for include in active:
                if include.reverse:
                    documents = await self._reverse(include, frontier)
                else:
                    documents = await self._forward(include, frontier)
                for document in documents:
                    if document["_id"] not in seen and len(seen) < MAX_INCLUDED:
                        seen.add(document["_id"])
                        found.append(document)
            frontier = found
            included.extend(stored_version(document) for document in found)
        return included

    async def _forward(
        self, include: Include, frontier: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        targets: list[str] = []
        for document in frontier:
            if include.source_type not in ("*", document["t"]):
                continue
            for reference in document.get("ref", ()):
                target_type, target_id = reference.get("tt"), reference.get("ti")
                if target_type is None or target_id is None:
                    continue
                if include.param != "*" and reference.get("p") != include.param:
                    continue
                if include.target_type and include.target_type != target_type:
                    continue
                targets.append(f"{target_type}/{target_id}")
        if not targets:
            return []
        return await self.find({"_id": {"$in": sorted(set(targets))}, "del": False}, {})

    async def _reverse(
        self, include: Include, frontier: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        by_type: dict[str, list[str]] = {}
        for document in frontier:
            by_type.setdefault(document["t"], []).append(document["i"])
        found: list[dict[str, Any]] = []
        for target_type, ids in by_type.items():
            if include.target_type and include.target_type != target_type:
                continue
            element: dict[str, Any] = {"tt": target_type, "ti": {"$in": ids}}
            if include.param != "*":
                element["p"] = include.param
            condition: dict[str, Any] = {"del": False, "ref": {"$elemMatch": element}}
            if include.source_type != "*":
                condition["t"] = include.source_type
            found.extend(await self.find(condition, {}))
        return found


def _sort_value(key: SortKey) -> Any:
    """The sort value of one key, with resources lacking a value placed last."""
    if key.param == "_id":
        return "$i"
    if key.param == "_lastUpdated":
        return "$lu"
    field = f"$sk.{key.param}.{'d' if key.descending else 'a'}"
    if key.kind in _TEXT_KINDS:
        last: Any = "" if key.descending else _LAST_TEXT
    else:
        last = -_LAST_NUMBER if key.descending else _LAST_NUMBER
    return {"$ifNull": [field, last]}


def _keyset(names: list[str], descending: list[bool], after: list[Any]) -> dict[str, Any]:
    """Rows strictly after ``after`` in the order (name, direction)...: a lexicographic OR."""
    alternatives = []
    for index, name in enumerate(names):
        condition: dict[str, Any] = {names[i]: after[i] for i in range(index)}
        condition[name] = {"$lt" if descending[index] else "$gt": after[index]}
        alternatives.append(condition)
    return {"$or": alternatives}


def _edge(document: dict[str, Any], sort_keys: int) -> list[Any]:
    return [*(document[f"s{index}"] for index in range(sort_keys)), int(document["k"])]
