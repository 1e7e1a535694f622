"""SQLite implementation of ``ResourceStore``.

Why threads, and where not: sqlite3 is blocking. Writes go to one dedicated thread and
connection (SQLite allows one writer at a time anyway; across processes ``BEGIN IMMEDIATE``
and a busy timeout serialize them), because a commit waits for fsync. Scans (history, finds)
run on a small reader pool. Point reads (read, vread) run on the event loop itself: under WAL
a reader never waits for the writer, and a primary-key lookup costs less CPU (~20 us) than
the thread hand-off it would otherwise need (measured: the hop halved read throughput).

Durability: WAL with ``synchronous=FULL`` by default, so an acknowledged write survives a
crash or power loss; a killed process leaves at most an uncommitted WAL tail, which SQLite
discards on the next open.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fhir_server.errors import StoreUnavailable
from fhir_server.model.instant import from_micros, to_micros
from fhir_server.storage.base import (
    HistoryPage,
    HistoryQuery,
    IdentityQuery,
    Method,
    StoredVersion,
    VersionConflict,
    WriteRecord,
)
from fhir_server.storage.sqlite.schema import SCHEMA_VERSION, STATEMENTS

T = TypeVar("T")
log = logging.getLogger("rofecare.storage")

THREAD_BUSY_TIMEOUT_MS = 30_000  # writers queue behind other processes' transactions
LOOP_BUSY_TIMEOUT_MS = 0  # the event loop never waits for a lock; see _point_read
RETRY_AFTER_SECONDS = "5"

_VERSION_COLUMNS = "v.resource_type, v.id, v.version_id, v.last_updated_us, v.method, v.body"


class SqliteStore:
    """A ResourceStore over one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", readers: int = 4) -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._loop_local: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._on_writer(self._create_schema)

    async def close(self) -> None:
        await self._on_writer(self._checkpoint)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._loop_local = None

    def _loop_connection(self) -> sqlite3.Connection:
        connection = self._loop_local
        if connection is None:
            connection = self._open_connection(LOOP_BUSY_TIMEOUT_MS)
            self._loop_local = connection
        return connection

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (writer or reader pool), opened on first use."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._open_connection(THREAD_BUSY_TIMEOUT_MS)
            self._local.connection = connection
        return connection

    def _open_connection(self, busy_timeout_ms: int) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_ms / 1000,
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _create_schema(self) -> None:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in STATEMENTS:
                connection.execute(statement)
            connection.execute(
                "INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _checkpoint(self) -> None:
        self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        return await _unavailable_on_error(
            asyncio.get_running_loop().run_in_executor(self._writer, fn)
        )

    async def _on_reader(self, fn: Callable[[], T]) -> T:
        return await _unavailable_on_error(
            asyncio.get_running_loop().run_in_executor(self._readers, fn)
        )

    # -- reads -----------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return await self._point_read(
            f"SELECT {_VERSION_COLUMNS} FROM resource_current c "
            "JOIN resource_version v ON v.seq = c.seq "
            "WHERE c.resource_type = ? AND c.id = ?",
            (resource_type, resource_id),
        )

    async def vread(
        self, resource_type: str, resource_id: str, version_id: int
    ) -> StoredVersion | None:
        return await self._point_read(
            f"SELECT {_VERSION_COLUMNS} FROM resource_version v "
            "WHERE v.resource_type = ? AND v.id = ? AND v.version_id = ?",
            (resource_type, resource_id, version_id),
        )

    async def _point_read(self, sql: str, args: tuple[Any, ...]) -> StoredVersion | None:
        """One primary-key row, read on the event loop's own connection.

        That connection never waits for a lock (under WAL a reader meets one only while
        another process recovers or truncates the WAL); if it meets one, the read is retried
        on the reader pool, where waiting does not stall every other request.
        """
        try:
            row = self._loop_connection().execute(sql, args).fetchone()
        except sqlite3.OperationalError:
            row = await self._on_reader(lambda: self._connection().execute(sql, args).fetchone())
        return _version(row) if row else None

    async def history(self, query: HistoryQuery) -> HistoryPage:
        def run() -> HistoryPage:
            where: list[str] = []
            args: list[Any] = []
            if query.resource_type is not None:
                where.append("v.resource_type = ?")
                args.append(query.resource_type)
            if query.resource_id is not None:
                where.append("v.id = ?")
                args.append(query.resource_id)
            if query.since is not None:
                where.append("v.last_updated_us >= ?")
                args.append(to_micros(query.since))
            if query.at is not None:
                start, end = (to_micros(moment) for moment in query.at)
                where.append("v.last_updated_us < ?")
                args.append(end)
                where.append(
                    "NOT EXISTS (SELECT 1 FROM resource_version n WHERE n.resource_type = "
                    "v.resource_type AND n.id = v.id AND n.version_id = v.version_id + 1 "
                    "AND n.last_updated_us <= ?)"
                )
                args.append(start)
            if query.cursor is not None:
                where.append("v.seq <= ?")
                args.append(query.cursor)
            sql = f"SELECT {_VERSION_COLUMNS}, v.seq FROM resource_version v"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY v.seq DESC LIMIT ?"
            args.append(query.count + 1)
            rows = self._connection().execute(sql, args).fetchall()
            next_cursor = rows[query.count][6] if len(rows) > query.count else None
            return HistoryPage([_version(row) for row in rows[: query.count]], next_cursor)

        return await self._on_reader(run)

    async def find(self, query: IdentityQuery) -> list[StoredVersion]:
        def run() -> list[StoredVersion]:
            sql = (
                f"SELECT {_VERSION_COLUMNS} FROM resource_current c "
                "JOIN resource_version v ON v.seq = c.seq "
                "WHERE c.resource_type = ? AND c.deleted = 0"
            )
            args: list[Any] = [query.resource_type]
            if query.ids is not None:
                sql += f" AND c.id IN ({','.join('?' * len(query.ids))})"
                args.extend(query.ids)
            for alternatives in query.tokens:
                clauses: list[str] = []
                for token in alternatives:
                    clause = "(t.param = ? AND t.code = ?"
                    args.extend((token.param, token.code))
                    if token.system is not None:
                        clause += " AND t.system = ?"
                        args.append(token.system)
                    clauses.append(clause + ")")
                sql += (
                    " AND EXISTS (SELECT 1 FROM token_index t WHERE "
                    "t.resource_type = c.resource_type AND t.id = c.id "
                    f"AND ({' OR '.join(clauses)}))"
                )
            sql += " ORDER BY c.id LIMIT ?"
            args.append(query.limit)
            return [_version(row) for row in self._connection().execute(sql, args).fetchall()]

        return await self._on_reader(run)

    # -- writes ----------------------------------------------------------------------------

    async def write(self, records: Sequence[WriteRecord]) -> None:
        await self._on_writer(lambda: self._write(records))

    def _write(self, records: Sequence[WriteRecord]) -> None:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                self._write_one(connection, record)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # a failed COMMIT may have ended it already
                connection.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_one(connection: sqlite3.Connection, record: WriteRecord) -> None:
        key = (record.resource_type, record.resource_id)
        row = connection.execute(
            "SELECT version_id FROM resource_current WHERE resource_type = ? AND id = ?", key
        ).fetchone()
        current = row[0] if row else 0
        if current != record.previous_version or record.version_id != current + 1:
            raise VersionConflict(record.resource_type, record.resource_id, current or None)
        cursor = connection.execute(
            "INSERT INTO resource_version "
            "(resource_type, id, version_id, last_updated_us, method, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (*key, record.version_id, to_micros(record.last_updated), record.method, record.body),
        )
        connection.execute(
            "INSERT INTO resource_current (resource_type, id, version_id, seq, deleted) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (resource_type, id) DO UPDATE SET "
            "version_id = excluded.version_id, seq = excluded.seq, deleted = excluded.deleted",
            (*key, record.version_id, cursor.lastrowid, int(record.deleted)),
        )
        if current:
            connection.execute("DELETE FROM token_index WHERE resource_type = ? AND id = ?", key)
        if record.tokens:
            connection.executemany(
                "INSERT INTO token_index (resource_type, id, param, system, code) "
                "VALUES (?, ?, ?, ?, ?)",
                [(*key, token.param, token.system or "", token.code) for token in record.tokens],
            )

    # -- maintenance -----------------------------------------------------------------------

    async def check(self) -> list[str]:
        def run() -> list[str]:
            connection = self._connection()
            problems = [
                f"integrity: {row[0]}"
                for row in connection.execute("PRAGMA integrity_check").fetchall()
                if row[0] != "ok"
            ]
            problems += [
                f"{row[0]}/{row[1]}: current version {row[2]} is not the newest {row[3]}"
                for row in connection.execute(
                    "SELECT c.resource_type, c.id, c.version_id, MAX(v.version_id) "
                    "FROM resource_current c JOIN resource_version v "
                    "ON v.resource_type = c.resource_type AND v.id = c.id "
                    "GROUP BY c.resource_type, c.id HAVING c.version_id != MAX(v.version_id)"
                )
            ]
            problems += [
                f"{row[0]}/{row[1]}: versions are not 1..{row[2]}"
                for row in connection.execute(
                    "SELECT resource_type, id, MAX(version_id), COUNT(*) FROM resource_version "
                    "GROUP BY resource_type, id HAVING MAX(version_id) != COUNT(*)"
                )
            ]
            problems += [
                f"{row[0]}/{row[1]}: has versions but no current pointer"
                for row in connection.execute(
                    "SELECT DISTINCT v.resource_type, v.id FROM resource_version v "
                    "LEFT JOIN resource_current c ON c.resource_type = v.resource_type "
                    "AND c.id = v.id WHERE c.id IS NULL"
                )
            ]
            return problems

        return await self._on_reader(run)


async def _unavailable_on_error(pending: Awaitable[T]) -> T:
    """Locked past the busy timeout, disk full, I/O error: 503 with Retry-After, not 500."""
    try:
        return await pending
    except sqlite3.OperationalError as error:
        log.warning("SQLite store unavailable: %s", error)
        raise StoreUnavailable(
            "The database is busy or unavailable; retry shortly",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from error


def _version(row: tuple[Any, ...]) -> StoredVersion:
    method: Method = row[4]
    return StoredVersion(
        resource_type=row[0],
        resource_id=row[1],
        version_id=row[2],
        last_updated=from_micros(row[3]),
        method=method,
        body=row[5],
    )
