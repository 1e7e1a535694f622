"""The resume ledger of ``rofecare load``: which units of input are already in the store.

A small SQLite file of its own in the data directory (``load-ledger.sqlite3``), not tables
in the FHIR store: the store stays backend-neutral (the MongoDB backend needs no loader
tables) and a ledger can be inspected or deleted without touching FHIR data. Rows are
keyed by the store they belong to and by the unit's content key (``load_sources``); a row
lists the entries of a batch unit that did not load (``pending``), so a later run retries
exactly those. All calls run on one thread of their own: a durable commit (``FULL``) costs
an fsync, which must not stall the event loop that drives the writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson

from fhir_server.model.instant import now_utc, to_instant

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS loaded (
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    unit INTEGER NOT NULL,
    resources INTEGER NOT NULL,
    pending TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    PRIMARY KEY (store, key)
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class LedgerRow:
    resources: int  # entries of the unit
    pending: tuple[int, ...]  # entries (indices in the unit) not loaded yet

    @property
    def complete(self) -> bool:
        return not self.pending


class Ledger:
    def __init__(self, path: Path, store: str) -> None:
        self._path = path
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-ledger")
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        """Close the file; a write already handed to the thread still completes."""
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)

    async def get(self, key: str) -> LedgerRow | None:
        return await self._run(lambda: self._get(key))

    async def record(
        self, key: str, source: str, unit: int, resources: int, pending: Sequence[int]
    ) -> None:
        """Remember that the unit ``key`` is in the store, but for ``pending`` entries."""
        values = (
            self._store, key, source, unit, resources,
            orjson.dumps(sorted(pending)).decode(), to_instant(now_utc()),
        )  # fmt: skip
        await self._run(lambda: self._write(values))

    async def rows(self) -> int:
        return await self._run(self._count)

    async def forget(self) -> int:
        """Drop this store's rows (``--restart``, or a store found empty); how many."""
        return await self._run(self._forget)

    # -- on the ledger's thread --------------------------------------------------------------

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=10000")
        connection.execute(SCHEMA)
        self._connection = connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None, "the ledger is not open"
        return self._connection

    def _get(self, key: str) -> LedgerRow | None:
        row = (
            self._db()
            .execute(
                "SELECT resources, pending FROM loaded WHERE store = ? AND key = ?",
                (self._store, key),
            )
            .fetchone()
        )
        if row is None:
            return None
        return LedgerRow(int(row[0]), tuple(int(index) for index in orjson.loads(row[1])))

    def _write(self, values: tuple[str | int, ...]) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO loaded (store, key, source, unit, resources, pending, "
            "loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            values,
        )

    def _count(self) -> int:
        row = self._db().execute("SELECT count(*) FROM loaded WHERE store = ?", (self._store,))
        return int(row.fetchone()[0])

    def _forget(self) -> int:
        cursor = self._db().execute("DELETE FROM loaded WHERE store = ?", (self._store,))
        return cursor.rowcount
