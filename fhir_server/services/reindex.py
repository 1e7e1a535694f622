"""Rebuilding search index entries after the SearchParameters in force change.

Indexing happens at write time, so a parameter added later (a SearchParameter resource, or
a new Rofecare profile) knows nothing of resources written before it. ``rofecare reindex``
walks every current resource in store order and replaces its entries; a resource written
meanwhile already carries fresh entries and is skipped (the store compares versions), so
reindexing a live server is safe. Claims (storage/base.py, ``Claim``) are derived the same
way and rebuilt with the entries: a database from before claims gets them here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_server.search.plan import SearchPlan
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import IndexRecord, ResourceStore

BATCH = 500


@dataclass(frozen=True)
class ReindexSummary:
    resources: int
    reindexed: int
    seconds: float


async def count_current(store: ResourceStore) -> int:
    page = await store.search(SearchPlan((), (), count=0, total="accurate"))
    return page.total or 0


async def reindex(
    store: ResourceStore,
    index: SearchIndex,
    *,
    progress: Callable[[int], None] = lambda done: None,
    batch: int = BATCH,
    claims: Callable[[str, dict[str, Any]], tuple[str, ...] | None] = lambda kind, body: None,
) -> ReindexSummary:
    started = time.perf_counter()
    cursor: int | None = None
    seen = replaced = 0
    while True:
        page = await store.current(cursor, batch)
        records = []
        for version in page.versions:
            assert version.body is not None
            body = orjson.loads(version.body)
            entries, text = index.entries(body)
            records.append(
                IndexRecord(
                    version.resource_type,
                    version.resource_id,
                    version.version_id,
                    entries,
                    text,
                    claims(version.resource_type, body),
                )
            )
        if records:
            replaced += await store.replace_index(records)
        seen += len(records)
        progress(len(records))
        cursor = page.next_cursor
        if cursor is None:
            return ReindexSummary(seen, replaced, time.perf_counter() - started)
