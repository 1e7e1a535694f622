"""SQLite implementation of ``ResourceStore``.

Why threads, and where not: sqlite3 is blocking. Writes go to one dedicated thread and
connection (SQLite allows one writer at a time anyway; across processes ``BEGIN IMMEDIATE``
and a busy timeout serialize them), because a commit waits for fsync. Point reads (read,
vread) run on the event loop itself: under WAL a reader never waits for the writer, and a
primary-key lookup costs less CPU (~20 us) than the thread hand-off it would otherwise need
(measured: the hop halved read throughput). Searches too, within a budget of SQLite VM
steps; a search over it, and history, run on a small reader pool (``_search_on_loop``).

Search index rows are written with their version to an index log and applied to the index
tables in batches, before any search reads them (index_log.py): at most ``APPLY_DELAY_SECONDS``
after a write, at once when ``APPLY_AT`` resources wait, and whenever a search or a conditional
write needs the types it reads current. The index tables are in a file of their own
(schema.py), written by a thread of their own (``sqlite-indexer``), so applying the log
holds up neither this process's writes nor another's. With several processes on one store,
the backlog is applied by one of them for all (``APPLIER_HANDOVER_SECONDS``).

Locks: the main file's writer takes ``<database>-writer.lock``, a writer of the index file
``<database>-index-writer.lock`` (write_lock.py); a transaction that writes both (a
conditional write applying the log, a reindex) takes the main one first, and nobody holding
the index one waits for the main one, so they never deadlock. Transactions begin deferred:
``BEGIN IMMEDIATE`` would take the write lock of every attached file.

Durability: WAL with ``synchronous=FULL`` by default, so an acknowledged write survives a
crash or power loss; a killed process leaves at most an uncommitted WAL tail, which SQLite
discards on the next open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from fhir_server.errors import SearchTooLong, StoreUnavailable
from fhir_server.model.instant import to_micros
from fhir_server.search.plan import (
    SearchPlan,
    indexed_types,
)
from fhir_server.storage.base import (
    ConditionMatched,
    CurrentPage,
    GuardViolated,
    HistoryPage,
    HistoryQuery,
    IndexOf,
    IndexRecord,
    SearchPage,
    StoredVersion,
    WriteGuard,
    WriteRecord,
)
from fhir_server.storage.sqlite.batch import write_batch
from fhir_server.storage.sqlite.change_stamps import STAMPED_TYPES, ChangeStamps
from fhir_server.storage.sqlite.claims import read_book, with_identifier_claims
from fhir_server.storage.sqlite.fresh_writes import FreshWrites, Match, judged
from fhir_server.storage.sqlite.index_log import (
    PENDING,
    ComputedAhead,
    Computing,
    LoggedIndex,
    LogRow,
    MissingParameters,
    apply_logged,
    compute_ahead,
    forget_applied,
    log_index,
    log_row,
    logged_among,
)
from fhir_server.storage.sqlite.index_rows import INDEX_TABLE_NAMES, PidFunction
from fhir_server.storage.sqlite.rows import VERSION_COLUMNS, insert_rows, version_of
from fhir_server.storage.sqlite.schema import (
    CLAIMS_SINCE,
    IDENTIFIER_CLAIMS_SINCE,
    INDEX_SCHEMA,
    INDEX_STATEMENTS,
    SCHEMA_VERSION,
    STATEMENTS,
    UPGRADABLE_FROM,
    index_file,
)
from fhir_server.storage.sqlite.search import SqliteSearch
from fhir_server.storage.sqlite.upgrade import (
    add_deferred_column,
    claim_identifiers,
    move_index_tables,
    number_logged_versions,
)
from fhir_server.storage.sqlite.write_lock import ProcessRole, ProcessWriteLock

T = TypeVar("T")
log = logging.getLogger("rofecare.storage")

THREAD_BUSY_TIMEOUT_MS = 30_000  # writers queue behind other processes' transactions
LOOP_BUSY_TIMEOUT_MS = 0  # the event loop never waits for a lock; see _point_read
RETRY_AFTER_SECONDS = "5"


CACHE_KIB = 65_536
WAL_AUTOCHECKPOINT_PAGES = 10_000
MAX_GROUP_COMMIT = 64
ANALYZE_EVERY_WRITES = 20_000
ANALYSIS_LIMIT = 1_000  # writes sharing one commit, bounding the wait of the first
LOOP_SEARCH_STEPS = 100  # thousands of SQLite VM steps a search may take on the event loop
# The index log (index_log.py) is applied when this many resources were logged by this
# process, or this long after the first of them, a chunk per transaction so that writes
# queued meanwhile wait for one chunk at most.
APPLY_AT = 500
APPLY_DELAY_SECONDS = 0.25
APPLY_CHUNK = 250
# Applied rows leave the log with the writer's next commit; without writes, once this many
# are applied or this long after the first (each forgetting alone is a commit of its own).
FORGET_AT = 1_000
FORGET_DELAY_SECONDS = 1.0
# AuditEvents are written all the time (every write, and every flush of the read audit) and
# searched seldom: their rows wait in the log until this many are logged (or a search of
# AuditEvent applies them, as for any type), then go in one chunk. Each index row is a
# random insert, and a commit writes again every index page it touched: applied 10,000
# rather than ~2,000 at a time, a read audit's reference rows cost about half the CPU
# (docs/benchmarks.md, "Authentication and audit").
BULK_APPLIED_TYPES = frozenset({"AuditEvent"})
BULK_APPLY_ROWS = 10_000
# A search that had to wait for logged rows of its types makes writes of those types, in
# every process, apply their rows in their own transaction for this long: a type searched
# while it is written keeps its index current at each commit rather than at each search.
EAGER_SECONDS = 1.0
# With several processes on one store (serve --workers N), one of them, the applier
# (``ProcessRole``), applies the backlog of all; the others leave theirs to it for this
# long, then apply what it has not. Why: a SQLite connection drops its whole page cache when
# another process wrote the file, so two indexers taking turns each began every apply by
# reading again the index pages it touches. Measured with indexed creates over HTTP and two
# workers: 36 read calls per create instead of 45 (140 KB read instead of 178), and 1.4 %
# more creates than the code before with both servers loaded side by side.
APPLIER_HANDOVER_SECONDS = 2.0
EAGER_REREAD_SECONDS = 0.1  # how stale a writer's copy of index_eager may be
_FORGET_QUEUE_STATISTICS = "DELETE FROM main.sqlite_stat1 WHERE tbl = 'index_pending'"
# A type's newest version: what ``latest_change`` answers and a change stamp holds.
_LATEST_OF_TYPE = "SELECT MAX(seq) FROM resource_version WHERE resource_type = ?"
ALL_TYPES = "*"


@dataclass
class _QueuedWrite:
    records: Sequence[WriteRecord]
    log_rows: dict[int, LogRow]  # by id() of a record: its index log row, built in advance
    done: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


def _settle(done: asyncio.Future[None], outcome: BaseException | None) -> None:
    if done.done():  # the waiting request was cancelled
        return
    if outcome is None:
        done.set_result(None)
    else:
        done.set_exception(outcome)


class SchemaMismatch(RuntimeError):
    """The database file was written by a different, incompatible Rofecare schema."""


class SqliteStore:
    """A ResourceStore over one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        readers: int = 4,
        search_timeout: float = 30.0,
    ) -> None:
        self._path = path
        self._search_timeout = search_timeout
        self._closing = False
        self._synchronous = synchronous
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._loop_local: sqlite3.Connection | None = None
        self._pid_cache: dict[tuple[str, str], int] = {}
        self._pending_pids: dict[tuple[str, str], int] = {}  # writer thread only
        self._index_of: IndexOf | None = None  # computes deferred log rows (index_with)
        self._queue: list[_QueuedWrite] = []
        self._writes_since_analyze = 0
        self._queue_lock = threading.Lock()
        self._index_path = index_file(path)
        self._indexer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-indexer")
        # The applier's computing ahead (``_compute_ahead``), below the other threads.
        self._ahead = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite-ahead", initializer=_yield_to_writers
        )
        self._write_lock = ProcessWriteLock(path)  # writer thread only
        # The index file's lock, one per thread that writes it: flock locks of one open file
        # do not exclude each other.
        self._index_lock = ProcessWriteLock(self._index_path)  # writer thread only
        self._indexer_lock = ProcessWriteLock(self._index_path)  # indexer thread only
        self._applier = ProcessRole(self._index_path, "applier")  # indexer thread only
        self._stamps = ChangeStamps(path)  # written by the writer thread, read on the loop
        # event loop only: resource type -> (its stamp, its MAX(seq) read then, covering it)
        self._confirmed: dict[str, tuple[int, int]] = {}
        self._held_index: contextlib.ExitStack | None = None  # writer thread only
        self._index_held = False  # writer thread only: _index_lock is in _held_index
        self._applied_here: list[tuple[int, int]] = []  # writer thread only: by _apply_here
        self._index_synchronous = synchronous  # indexer thread only: its connection's setting
        self._apply_state = threading.Lock()  # guards the ten fields below
        self._unapplied = 0  # resources logged since the log was applied
        self._unapplied_bulk = 0  # the same, index rows of bulk types
        self._apply_timer: threading.Timer | None = None
        self._backlog_queued = False  # an _apply_backlog is queued on the indexer
        self._sync_wanted = False  # rows applied without a sync wait for _apply_backlog
        self._eager_wanted: set[str] = set()  # types to apply now, once the indexer is free
        self._applied: list[tuple[int, int]] = []  # (rkey, seq) applied, to forget
        self._forget_timer: threading.Timer | None = None
        self._handover_timer: threading.Timer | None = None  # armed while another applies
        self._handover_bulk = False  # rows of bulk types were left to the applier too
        self._eager_marked: dict[str, float] = {}  # indexer thread only: index_eager as written
        self._undurable: list[tuple[int, int]] = []  # indexer thread only: not yet synced
        # writer thread only: index_eager as last read (resource type or ALL_TYPES -> epoch
        # seconds), and when it was read (monotonic)
        self._eager_until: dict[str, float] = {}
        self._eager_read = -EAGER_REREAD_SECONDS

    # -- lifecycle -------------------------------------------------------------------------

    def index_with(self, index_of: IndexOf) -> None:
        self._index_of = index_of

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._on_writer(self._create_schema)
        await self._on_indexer(self._apply_all)
        await self._on_writer(self._sweep_log)
        await self._on_writer(self._analyze)

    async def close(self) -> None:
        self._closing = True  # searches still running stop at their next progress check
        self._cancel_apply_timer()
        await self._on_indexer(self._apply_all)
        await self._on_writer(self._sweep_log)
        await self._on_writer(self._checkpoint)
        self._writer.shutdown(wait=True)
        self._indexer.shutdown(wait=True)
        self._ahead.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._write_lock.close()
        self._index_lock.close()
        self._indexer_lock.close()
        self._applier.close()
        self._stamps.close()
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
        connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Statement journals (a group commit runs each write in a savepoint) and temporary
        # tables in memory, not in files: with files, an indexed create over HTTP wrote
        # 75 KB to them, a third of its writes (strace of `serve --workers 2`). With this
        # and index_log.py's ``->>``, two servers loaded side by side did 4.6 % more indexed
        # creates than before, over eight rounds (benchmarks/side_by_side.py).
        connection.execute("PRAGMA temp_store=MEMORY")
        connection.execute(f"ATTACH DATABASE ? AS {INDEX_SCHEMA}", (str(self._index_path),))
        for schema in ("main", INDEX_SCHEMA):
            connection.execute(f"PRAGMA {schema}.journal_mode=WAL")
            # FULL for the index file too: a row is forgotten from the log (in a later,
            # durable commit of the main file) only after it was applied there.
            connection.execute(f"PRAGMA {schema}.synchronous={self._synchronous}")
            connection.execute(f"PRAGMA {schema}.cache_size=-{CACHE_KIB}")
        connection.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _create_schema(self) -> None:
        with self._write_lock.held(), self._index_lock.held():
            self._create_schema_locked()

    def _create_schema_locked(self) -> None:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")  # both files: it may move rows between them
        try:
            existing = connection.execute(
                "SELECT name FROM sqlite_master WHERE name = 'store_meta'"
            ).fetchone()
            before: str | None = None
            if existing:
                row = connection.execute(
                    "SELECT value FROM store_meta WHERE key = 'schema_version'"
                ).fetchone()
                before = row[0] if row else None
                if row and row[0] != str(SCHEMA_VERSION) and row[0] not in UPGRADABLE_FROM:
                    raise SchemaMismatch(
                        f"{self._path} has schema version {row[0]}; this Rofecare needs "
                        f"{SCHEMA_VERSION}. Export it with the older version and load it again."
                    )
            if before is not None and before.isdigit() and int(before) < CLAIMS_SINCE:
                held = connection.execute("SELECT 1 FROM resource_current LIMIT 1").fetchone()
                if held:
                    log.warning(
                        "%s was written by a Rofecare without resource claims (%s): run "
                        "`rofecare reindex` so that rules such as one patient per medical "
                        "record number know its resources",
                        self._path,
                        UPGRADABLE_FROM[before],
                    )
            number_logged_versions(connection)
            add_deferred_column(connection)
            for statement in (*STATEMENTS, *INDEX_STATEMENTS):
                connection.execute(statement)
            move_index_tables(connection)
            self._pair_index_file(connection)
            if before is not None and before.isdigit() and int(before) < IDENTIFIER_CLAIMS_SINCE:
                claim_identifiers(connection, self._writer_computing(connection))
            connection.execute(
                "INSERT INTO store_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _pair_index_file(self, connection: sqlite3.Connection) -> None:
        """Make sure the index file is this database's. A copy of the main file without its
        index file (or beside another database's) would otherwise answer searches from the
        wrong rows: such an index file is emptied, and the log says to run reindex."""
        row = connection.execute("SELECT value FROM store_meta WHERE key = 'index_id'").fetchone()
        paired = row[0] if row else None
        row = connection.execute(
            f"SELECT value FROM {INDEX_SCHEMA}.index_meta WHERE key = 'index_id'"
        ).fetchone()
        found = row[0] if row else None
        if paired is not None and found == paired:
            if not _index_ahead(connection):
                return
            problem = "holds versions newer than %s (was it restored from a backup alone?)"
        elif found is not None or paired is not None:  # not a new pair: a file was swapped
            problem = "does not hold the search index of %s"
        else:
            problem = ""  # a new pair of files
        if problem:
            for table in (*INDEX_TABLE_NAMES, "idx_text", "index_state", "param_multiple"):
                connection.execute(f"DELETE FROM {INDEX_SCHEMA}.{table}")
            connection.execute(f"DELETE FROM {INDEX_SCHEMA}.index_meta WHERE key = 'applied_seq'")
            if connection.execute("SELECT 1 FROM resource_current LIMIT 1").fetchone():
                log.error(
                    "%s " + problem + "; it was emptied. Run `rofecare reindex` so that "
                    "searches find the resources stored before",
                    self._index_path,
                    self._path,
                )
        paired = paired or uuid.uuid4().hex
        for table in ("store_meta", f"{INDEX_SCHEMA}.index_meta"):
            connection.execute(
                f"INSERT INTO {table} (key, value) VALUES ('index_id', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (paired,),
            )

    def _checkpoint(self) -> None:
        for schema in ("main", INDEX_SCHEMA):
            self._connection().execute(f"PRAGMA {schema}.wal_checkpoint(TRUNCATE)")

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        return await _unavailable_on_error(
            asyncio.get_running_loop().run_in_executor(self._writer, fn)
        )

    async def _on_indexer(self, fn: Callable[[], T]) -> T:
        return await _unavailable_on_error(
            asyncio.get_running_loop().run_in_executor(self._indexer, fn)
        )

    async def _on_reader(self, fn: Callable[[], T]) -> T:
        return await _unavailable_on_error(
            asyncio.get_running_loop().run_in_executor(self._readers, fn)
        )

    # -- reads -----------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return await self._point_read(
            f"SELECT {VERSION_COLUMNS} FROM resource_current c "
            "JOIN resource_version v ON v.seq = c.seq "
            "WHERE c.resource_type = ? AND c.id = ?",
            (resource_type, resource_id),
        )

    async def vread(
        self, resource_type: str, resource_id: str, version_id: int
    ) -> StoredVersion | None:
        return await self._point_read(
            f"SELECT {VERSION_COLUMNS} FROM resource_version v "
            "WHERE v.resource_type = ? AND v.id = ? AND v.version_id = ?",
            (resource_type, resource_id, version_id),
        )

    async def latest_change(self, resource_type: str) -> int:
        """From the type's change stamp when nothing was written since the last look
        (change_stamps.py), else on the event loop like a point read: one probe of the
        (resource_type, seq) index."""
        stamp = self._stamps.read(resource_type)  # before the query: see change_stamps.py
        confirmed = self._confirmed.get(resource_type)
        if stamp is not None and confirmed is not None and confirmed[0] == stamp:
            return confirmed[1]
        rows = await self._loop_rows(_LATEST_OF_TYPE, (resource_type,))
        latest = int(rows[0][0] or 0)
        if stamp is not None and latest >= stamp:
            self._confirmed[resource_type] = (stamp, latest)
        return latest

    async def claimants(self, keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        if not keys:
            return {}
        listed = sorted(set(keys))
        sql = (
            "SELECT k.claim, c.resource_type, c.id FROM resource_claim k "
            "JOIN resource_current c ON c.rkey = k.rkey "
            f"WHERE k.claim IN ({', '.join('?' * len(listed))}) ORDER BY k.claim, c.rkey"
        )
        rows = await self._loop_rows(sql, listed)  # a few primary-key rows, as a point read
        found: dict[str, list[tuple[str, str]]] = {}
        for key, resource_type, resource_id in rows:
            found.setdefault(key, []).append((resource_type, resource_id))
        return found

    async def _point_read(self, sql: str, args: tuple[Any, ...]) -> StoredVersion | None:
        """One primary-key row, read on the event loop's own connection (``_loop_rows``)."""
        rows = await self._loop_rows(sql, args)
        return version_of(rows[0]) if rows else None

    async def _loop_rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """The rows of a query of a few index probes, read on the event loop's own
        connection.

        That connection never waits for a lock (under WAL a reader meets one only while
        another process recovers or truncates the WAL); if it meets one, the read is retried
        on the reader pool, where waiting does not stall every other request.
        """
        try:
            return self._loop_connection().execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return await self._on_reader(lambda: self._connection().execute(sql, args).fetchall())

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
            sql = f"SELECT {VERSION_COLUMNS}, v.seq FROM resource_version v"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY v.seq DESC LIMIT ?"
            args.append(query.count + 1)
            rows = self._connection().execute(sql, args).fetchall()
            next_cursor = rows[query.count][6] if len(rows) > query.count else None
            return HistoryPage([version_of(row) for row in rows[: query.count]], next_cursor)

        return await self._on_reader(run)

    async def search(self, plan: SearchPlan) -> SearchPage:
        """Run ``plan`` in one read snapshot in which the index log holds no rows of the
        types it reads: if it does, they are applied first (index_log.py)."""
        types = indexed_types(plan)
        page = self._search_on_loop(plan, types)
        if page is not None:
            return page

        def run() -> SearchPage:
            connection = self._connection()
            for _ in range(2):
                if connection.in_transaction:  # a failed COMMIT left it open
                    connection.execute("ROLLBACK")
                connection.execute("BEGIN")
                try:
                    if not logged_among(connection, types):
                        return self._run_search(connection, plan)
                finally:
                    connection.execute("COMMIT")  # nothing written: ends the snapshot
                self._indexer.submit(self._apply_for_search, types).result()
            # Writes keep logging rows of these types: search where none can arrive.
            return self._writer.submit(self._search_applied, plan, types).result()

        return await self._on_reader(run)

    def _search_on_loop(self, plan: SearchPlan, types: frozenset[str] | None) -> SearchPage | None:
        """``plan`` on the event loop's own connection, as point reads are; None when it
        cannot run there (rows of its types wait in the log, a lock, or more than
        ``LOOP_SEARCH_STEPS`` thousand VM steps), and the caller runs it on a reader.

        Why: on a reader thread each statement gives the GIL away and waits to take it back
        from the busy event loop. A search runs several (count, page, versions, includes),
        and at 8 connections over two workers those waits made most of its latency: token
        searches 925-1,089 -> 1,675-1,747/s, p99 27-37 -> 10-12 ms; the date range p99
        26-29 -> 15-17 ms (docs/benchmarks.md). The benchmark searches take 1,000-39,000
        steps; the budget bounds how long one may hold the loop (a few milliseconds), and
        a search over it starts again on a reader, with the search timeout."""
        connection = self._loop_connection()
        calls = 0

        def over_budget() -> int:  # SQLite calls this every thousand VM steps
            nonlocal calls
            calls += 1
            return int(calls > LOOP_SEARCH_STEPS)

        try:
            connection.execute("BEGIN")
        except sqlite3.OperationalError:  # a lock: run it on a reader
            return None
        connection.set_progress_handler(over_budget, 1_000)
        try:
            if logged_among(connection, types):
                return None
            return SqliteSearch(connection, self._resolver(connection)).run(plan)
        except sqlite3.OperationalError:  # interrupted, or busy: run it on a reader
            return None
        finally:
            connection.set_progress_handler(None, 0)
            if connection.in_transaction:  # read only: ends the snapshot
                connection.execute("ROLLBACK")

    def _run_search(
        self, connection: sqlite3.Connection, plan: SearchPlan, *, remember: bool = True
    ) -> SearchPage:
        deadline = time.monotonic() + self._search_timeout

        def too_long() -> int:  # SQLite calls this every thousand VM steps
            return int(self._closing or time.monotonic() > deadline)

        connection.set_progress_handler(too_long, 1_000)
        try:
            return SqliteSearch(connection, self._resolver(connection, remember=remember)).run(plan)
        except sqlite3.OperationalError as error:
            if "interrupted" not in str(error):
                raise
            raise SearchTooLong(
                f"The search ran longer than {self._search_timeout:g} s and was stopped; "
                "narrow it with more selective parameters",
                rofecare_code="rofecare-2120",
            ) from None
        finally:
            connection.set_progress_handler(None, 0)

    def _search_applied(self, plan: SearchPlan, types: frozenset[str] | None) -> SearchPage:
        """Writer thread: apply the log and search in one write transaction."""

        def run(connection: sqlite3.Connection) -> SearchPage:
            self._apply_here(connection, types)
            return self._run_search(connection, plan, remember=False)

        return self._in_transaction(run)

    async def current(self, cursor: int | None, limit: int) -> CurrentPage:
        def run() -> CurrentPage:
            rows = (
                self._connection()
                .execute(
                    f"SELECT c.rkey, {VERSION_COLUMNS} FROM resource_current c "
                    "JOIN resource_version v ON v.seq = c.seq "
                    "WHERE c.deleted = 0 AND c.rkey > ? ORDER BY c.rkey LIMIT ?",
                    (cursor or 0, limit),
                )
                .fetchall()
            )
            next_cursor = rows[-1][0] if len(rows) == limit else None
            return CurrentPage([version_of(row[1:]) for row in rows], next_cursor)

        return await self._on_reader(run)

    def _resolver(
        self, connection: sqlite3.Connection, *, remember: bool = True
    ) -> Callable[[tuple[str, ...], str], list[int]]:
        """Parameter ids for a search: from the cache, else the table (another process may
        have interned them); a parameter no resource ever had has no id and matches nothing.
        ``remember=False`` inside a write transaction: an id it reads may be uncommitted."""

        def resolve(scope: tuple[str, ...], code: str) -> list[int]:
            if not scope:
                rows = connection.execute("SELECT pid FROM search_param WHERE code = ?", (code,))
                return [row[0] for row in rows]
            pids = [self._known_pid(connection, owner, code, remember) for owner in scope]
            return [pid for pid in pids if pid is not None]

        return resolve

    def _known_pid(
        self, connection: sqlite3.Connection, owner: str, code: str, remember: bool = True
    ) -> int | None:
        """The id of (``owner``, ``code``): cached, else read (and cached when ``remember``:
        read outside a write transaction it is committed, and an id never changes)."""
        pid = self._pid_cache.get((owner, code))
        if pid is None:
            row = connection.execute(
                "SELECT pid FROM search_param WHERE resource_type = ? AND code = ?",
                (owner, code),
            ).fetchone()
            if row is None:
                return None
            pid = int(row[0])
            if remember:
                self._pid_cache.setdefault((owner, code), pid)
        return pid

    # -- writes ----------------------------------------------------------------------------

    async def write(self, records: Sequence[WriteRecord]) -> None:
        """Queue the records for the writer thread and wait until they are committed.

        Group commit: the writer takes every write queued while it was busy and commits them
        in one transaction, each inside its own savepoint, so a version conflict in one
        rolls back only that one. A commit is the expensive part (fsync, and one write of
        each index page touched), and concurrent writes share it; each is acknowledged only
        after the shared commit, so durability is unchanged.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        records = [with_identifier_claims(record) for record in records]
        if self._index_of is None and any(record.index_later for record in records):
            raise RuntimeError("a record to index later, and no index_with function given")
        log_rows = self._log_rows(records)
        with self._queue_lock:
            self._queue.append(_QueuedWrite(records, log_rows, done, loop))
            first = len(self._queue) == 1
        if first:
            self._writer.submit(self._drain_queue)
        await _unavailable_on_error(done)

    def _drain_queue(self) -> None:
        """Writer thread: commit the writes queued. The queue is taken only once this
        thread holds the write lock, so the writes queued while another process committed
        join this commit instead of waiting for the next one: with two workers the lock
        is rarely free, and each commit's fsync is shared by more writes."""
        outcomes: list[BaseException | None]
        with self._write_lock.held():
            with self._queue_lock:
                batch = self._queue[:MAX_GROUP_COMMIT]
                self._queue = self._queue[MAX_GROUP_COMMIT:]
                if self._queue:
                    self._writer.submit(self._drain_queue)
            if not batch:
                return
            log_rows = {key: row for job in batch for key, row in job.log_rows.items()}

            stamped = sorted(
                {r.resource_type for job in batch for r in job.records}.intersection(STAMPED_TYPES)
            )

            def run(connection: sqlite3.Connection) -> list[BaseException | None]:
                forget_applied(connection, self._take_applied())
                outcomes = self._write_jobs(connection, [job.records for job in batch], log_rows)
                self._stamp(connection, stamped)
                return outcomes

            try:
                outcomes = self._in_transaction(run, locked=True)
            except BaseException as error:  # the shared commit failed: every write in it did
                outcomes = [error] * len(batch)
                if stamped:  # what it stamped was never committed
                    with contextlib.suppress(Exception):
                        self._stamp(self._connection(), stamped)
        for job, outcome in zip(batch, outcomes, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.done, outcome)
        logged, bulk = 0, 0
        for job in batch:
            for record in job.records:
                if record.resource_type in BULK_APPLIED_TYPES:
                    bulk += _index_rows(record)
                else:
                    logged += 1
        written = {record.resource_type for job in batch for record in job.records}
        self._schedule_apply(logged, bulk, self._eager_types(written))
        self._writes_since_analyze += len(batch)
        if self._writes_since_analyze >= ANALYZE_EVERY_WRITES:
            self._writes_since_analyze = 0
            self._analyze()

    def _stamp(self, connection: sqlite3.Connection, resource_types: Sequence[str]) -> None:
        """Writer thread, holding the write lock: stamp each type with its newest version
        as ``connection`` sees it (change_stamps.py)."""
        for resource_type in resource_types:
            row = connection.execute(_LATEST_OF_TYPE, (resource_type,)).fetchone()
            self._stamps.write(resource_type, int(row[0] or 0))

    def _log_rows(self, records: Sequence[WriteRecord]) -> dict[int, LogRow]:
        """Event loop: the index log rows of ``records`` whose parameters all have an id
        already (the others are built by the writer, which interns new ones). Keyed by
        ``id(record)``: the queue holds each record until its write is settled."""
        cache = self._pid_cache  # updated by the writer thread only after a commit

        def known(owner: str, code: str, _kind: str) -> int | None:
            return cache.get((owner, code))

        rows = {}
        for record in records:
            if record.deleted or record.index_later or not (record.entries or record.full_text):
                continue
            row = log_row(record.resource_type, record.entries, record.full_text, known)
            if row is not None:
                rows[id(record)] = row
        return rows

    def _write_jobs(
        self,
        connection: sqlite3.Connection,
        jobs: Sequence[Sequence[WriteRecord]],
        log_rows: Mapping[int, LogRow],
    ) -> list[BaseException | None]:
        """Write the jobs of one group commit. A job holding a conditional create or a
        guard first checks it, and the check must see every job before it.

        The check reads the index, whose rows wait in the log (index_log.py). Rows logged
        before this transaction are applied once per type (``applied``). The jobs of this
        transaction, written (``written``: their rows are in the log) or queued for the
        next ``write_batch`` (``queued``), are judged from their own entries when the
        condition has a shape ``entry_match`` judges; only a match among the queued ones,
        which may still be refused, makes them be written first and the check run again.
        Otherwise, as for every conditional write before: the queued jobs are written, the
        log applied and the index asked. Why: each apply and each ``write_batch`` is a
        handful of statements, and each statement of this thread waits for the GIL that
        the event loop holds; a batch of conditional creates paid both per create."""
        pid = self._pid_function(connection)
        outcomes: list[BaseException | None] = [None] * len(jobs)
        waiting: list[int] = []  # the jobs queued, in order
        queued, written = FreshWrites(self._index_of), FreshWrites(self._index_of)
        applied: set[str] = set()
        # The types every judged condition of the group reads, applied in one go: an apply
        # per type, each when its first job came, was ~20 statements and a commit's worth
        # of index pages each (three types, three applies per group commit of Synthea's
        # prerequisite batches).
        conditions = [
            [record for record in job if record.unless_exists is not None or record.guards]
            for job in jobs
        ]
        kinds = [_condition_types(records) if records else None for records in conditions]
        upfront: set[str] = set()
        for records, types in zip(conditions, kinds, strict=True):
            if types is not None and judged(records):
                upfront |= types

        def flush() -> None:
            batch = [jobs[index] for index in waiting]
            if batch:
                results = self._write_batch(connection, batch, pid, log_rows)
                written.add(batch, results)
                for index, result in zip(waiting, results, strict=True):
                    outcomes[index] = result
            waiting.clear()
            queued.clear()

        for index, job in enumerate(jobs):
            conditional, types = conditions[index], kinds[index]
            matched: BaseException | None = None
            if conditional:
                if types is None or not judged(conditional):
                    flush()
                    self._apply_here(connection, types)
                    matched, _ = self._condition_matched(connection, conditional, job, None, None)
                else:
                    if not types <= applied:
                        wanted = (types | upfront) - applied
                        self._apply_here(connection, frozenset(wanted))
                        applied.update(wanted)
                    if not queued.only_creates(types):
                        flush()
                    matched, provisional = self._condition_matched(
                        connection, conditional, job, written, queued
                    )
                    if provisional:
                        flush()
                        matched, _ = self._condition_matched(
                            connection, conditional, job, written, queued
                        )
            if matched is not None:
                outcomes[index] = matched
            else:
                waiting.append(index)
                queued.queue(job)
        flush()
        return outcomes

    # -- the index log (index_log.py) -------------------------------------------------------

    def _eager_types(self, written: set[str]) -> set[str]:
        """Writer thread, after a commit: the types of ``written`` that a search of any
        process waited for lately."""
        if time.monotonic() - self._eager_read >= EAGER_REREAD_SECONDS:
            self._eager_until = dict(
                self._connection()
                .execute("SELECT resource_type, until FROM index_eager")
                .fetchall()
            )
            self._eager_read = time.monotonic()
        now = time.time()
        if self._eager_until.get(ALL_TYPES, 0.0) > now:
            return written
        return {name for name in written if self._eager_until.get(name, 0.0) > now}

    def _schedule_apply(self, logged: int, bulk: int, eager: set[str]) -> None:
        """Writer thread, after a commit: have the indexer apply the log soon, at once if it
        is long or a search waited for these types lately (``eager``); rows of bulk types
        only when they are many."""
        with self._apply_state:
            self._unapplied += logged
            self._unapplied_bulk += bulk
            first_eager = bool(eager) and not self._eager_wanted  # else a call is queued
            self._eager_wanted |= eager
            self._plan_apply_locked()
        if first_eager:
            self._on_indexer_soon(self._apply_eager)

    def _plan_apply_locked(self) -> None:
        """Queue an apply now if the log is long, else arm the timer if rows wait; at most
        one of either is pending at a time."""
        if self._backlog_queued:
            return
        if self._unapplied >= APPLY_AT or self._unapplied_bulk >= BULK_APPLY_ROWS:
            self._cancel_apply_timer_locked()
            self._backlog_queued = True
            self._on_indexer_soon(self._apply_backlog)
        elif (self._unapplied or self._sync_wanted) and self._apply_timer is None:
            timer = threading.Timer(APPLY_DELAY_SECONDS, self._submit_apply)
            timer.daemon = True
            self._apply_timer = timer
            timer.start()

    def _cancel_apply_timer(self) -> None:
        with self._apply_state:
            self._cancel_apply_timer_locked()
            for timer in (self._forget_timer, self._handover_timer):
                if timer is not None:
                    timer.cancel()
            self._forget_timer = self._handover_timer = None

    def _cancel_apply_timer_locked(self) -> None:
        timer, self._apply_timer = self._apply_timer, None
        if timer is not None:
            timer.cancel()

    def _submit_apply(self) -> None:
        """The timer's: queue an apply of the backlog."""
        with self._apply_state:
            self._apply_timer = None
            if self._backlog_queued:
                return
            self._backlog_queued = True
        self._on_indexer_soon(self._apply_backlog)

    def _on_indexer_soon(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # shut down: close() applied the log
            self._indexer.submit(fn)

    def _apply_backlog(self) -> None:
        """Indexer thread: apply one chunk of the log, and queue the next after the writes
        that arrived meanwhile."""
        with self._apply_state:
            self._backlog_queued = False
            counted, counted_bulk = self._unapplied, self._unapplied_bulk
            bulk = counted_bulk >= BULK_APPLY_ROWS
        if not self._applier.held():
            self._hand_over(bulk)
            return
        excluding = () if bulk else BULK_APPLIED_TYPES
        applied = self._apply_durably(limit=APPLY_CHUNK, excluding=excluding)
        if applied is None:
            return
        with self._apply_state:
            self._sync_wanted = False
            if len(applied) < APPLY_CHUNK:  # all of it: what was counted before is applied
                self._unapplied -= min(counted, self._unapplied)
                if bulk:
                    self._unapplied_bulk -= min(counted_bulk, self._unapplied_bulk)
            else:  # more waits: go on after the writes queued meanwhile
                self._unapplied = max(self._unapplied, APPLY_AT)
            self._plan_apply_locked()  # the writes logged while this one ran

    def _hand_over(self, bulk: bool) -> None:
        """Indexer thread, when another process is the applier: leave it the rows logged so
        far (with those of bulk types when they are many), and apply those it has not in
        ``APPLIER_HANDOVER_SECONDS`` (it may have no writes of its own to wake it, or may
        have ended)."""
        with self._apply_state:
            self._unapplied = 0
            if bulk:
                self._unapplied_bulk = 0
                self._handover_bulk = True
            if self._handover_timer is not None:  # rows of this one were left already
                return
        through = _last_seq(self._connection())
        timer = threading.Timer(
            APPLIER_HANDOVER_SECONDS, self._on_indexer_soon, (lambda: self._apply_left(through),)
        )
        timer.daemon = True
        with self._apply_state:
            self._handover_timer = timer
        timer.start()

    def _apply_left(self, through: int) -> None:
        """Indexer thread: apply the rows, up to version ``through``, the applier left."""
        with self._apply_state:
            self._handover_timer = None
            bulk, self._handover_bulk = self._handover_bulk, False
        excluding = () if bulk else BULK_APPLIED_TYPES
        if self._apply_durably(excluding=excluding, through_seq=through) is None:
            return
        with self._apply_state:
            self._sync_wanted = False
            self._plan_apply_locked()  # the writes logged meanwhile

    def _apply_durably(
        self,
        *,
        limit: int | None = None,
        excluding: Collection[str] = (),
        through_seq: int | None = None,
        ahead: ComputedAhead | None = None,
    ) -> list[tuple[int, int]] | None:
        """Indexer thread: apply logged rows (those ``apply_logged`` picks with these
        arguments) in a durable transaction, and have the writer forget them; None when it
        failed (they stay in the log: the next search applies them, or says why not)."""

        def run(connection: sqlite3.Connection) -> list[tuple[int, int]]:
            applied = apply_logged(
                connection,
                limit=limit,
                excluding=excluding,
                through_seq=through_seq,
                computing=self._computing(connection),
                ahead=ahead,
            )
            self._sync_undurable(connection, applied)
            return applied

        try:
            applied = self._in_index_transaction(run)
        except Exception:
            log.exception("The index log could not be applied now")
            return None
        self._applied_by_indexer(applied)
        return applied

    # -- an applier process (index_process.py) -----------------------------------------------

    async def take_applier_role(self) -> bool:
        """Hold the role of applying every process's index log (``ProcessRole``), if no
        other store holds it: the other stores then leave their rows to this one."""
        return await self._on_indexer(self._applier.held)

    async def apply_pending(self, chunk: int = APPLY_CHUNK) -> int:
        """Apply the log of every process, ``chunk`` resources per transaction, as the
        holder of the applier role: rows of bulk types (``BULK_APPLIED_TYPES``) once they
        are many. How many resources it applied."""
        return await self._on_indexer(lambda: self._apply_pending(chunk))

    def _apply_pending(self, chunk: int) -> int:
        bulk = self._bulk_waiting() >= BULK_APPLY_ROWS
        excluding = () if bulk else BULK_APPLIED_TYPES
        total = 0
        while not self._closing:
            ahead = self._ahead.submit(self._compute_ahead, chunk, excluding).result()
            applied = self._apply_durably(limit=chunk, excluding=excluding, ahead=ahead)
            if applied is None:
                break
            total += len(applied)
            if len(applied) < chunk:
                break
        return total

    def _compute_ahead(self, limit: int, excluding: Collection[str]) -> ComputedAhead:
        """Ahead thread, while the indexer waits: the next chunk's deferred rows, computed
        in a read transaction, without the index file's lock (``compute_ahead``); none
        when that failed (the apply computes them)."""
        connection = self._connection()
        computing = self._computing(connection)
        if computing is None:
            return {}
        try:
            return _committed(
                connection, lambda reading: compute_ahead(reading, computing, limit, excluding)
            )
        except Exception:
            log.exception("The index log's next rows could not be computed ahead")
            return {}

    def _bulk_waiting(self) -> int:
        """Indexer thread: the index rows of bulk types waiting in the log, estimated as
        ``_index_rows`` counts them as they are written."""
        marks = ", ".join("?" * len(BULK_APPLIED_TYPES))
        row = (
            self._connection()
            .execute(
                "SELECT sum(CASE WHEN p.deferred "
                f"THEN max(1, length(v.body) / {DEFERRED_BYTES_PER_ROW}) ELSE "
                + " + ".join(f"coalesce(json_array_length(p.{t}), 0)" for t in INDEX_TABLE_NAMES)
                + " END) FROM index_pending p JOIN resource_version v ON v.seq = p.seq "
                f"WHERE p.resource_type IN ({marks}) AND {PENDING}",
                sorted(BULK_APPLIED_TYPES),
            )
            .fetchone()
        )
        return int(row[0] or 0)

    def _apply_eager(self) -> None:
        """Indexer thread: apply the rows of the types searches waited for lately, written
        since the last call (one call serves every commit that came meanwhile)."""
        with self._apply_state:
            types, self._eager_wanted = self._eager_wanted, set()
        if not types:
            return
        try:
            applied = self._in_index_transaction(
                lambda connection: apply_logged(
                    connection, types, computing=self._computing(connection)
                ),
                durable=False,
            )
        except Exception:  # left in the log: the next search applies it, or says why not
            log.exception("The index log could not be applied now")
            return
        self._applied_by_indexer(applied, durable=False)

    def _apply_for_search(self, types: frozenset[str] | None) -> None:
        """Indexer thread: apply the rows a search waits for, and have every process's
        writes of those types apply theirs right after each commit for a while
        (``index_eager``)."""
        until = time.time() + EAGER_SECONDS

        names = sorted(types) if types is not None else [ALL_TYPES]
        # Marked again only when half its time has passed: each mark is a commit (an fsync),
        # and a run of conditional creates had hundreds of searches wait, each marking.
        marked = self._eager_marked
        due = [name for name in names if until - marked.get(name, 0.0) > EAGER_SECONDS / 2]

        def run(connection: sqlite3.Connection) -> list[tuple[int, int]]:
            applied = apply_logged(connection, types, computing=self._computing(connection))
            if EAGER_SECONDS > 0 and due:
                insert_rows(
                    connection,
                    "INSERT INTO index_eager (resource_type, until)",
                    [(name, until) for name in due],
                    " ON CONFLICT (resource_type) DO UPDATE SET until = excluded.until",
                )
                self._eager_read = -EAGER_REREAD_SECONDS  # read it again at the next commit
            return applied  # nothing applied nor marked: a read-only commit, no fsync

        self._applied_by_indexer(self._in_index_transaction(run, durable=False), durable=False)
        self._eager_marked.update(dict.fromkeys(due, until))
        if types is None or not BULK_APPLIED_TYPES.isdisjoint(types):
            with self._apply_state:
                self._unapplied_bulk = 0

    def _apply_all(self) -> None:
        """Indexer thread: apply every logged row."""

        def run(connection: sqlite3.Connection) -> list[tuple[int, int]]:
            applied = apply_logged(connection, computing=self._computing(connection))
            self._sync_undurable(connection, applied)
            return applied

        self._applied_by_indexer(self._in_index_transaction(run))
        with self._apply_state:
            self._unapplied = self._unapplied_bulk = 0
            self._sync_wanted = False

    def _sync_undurable(self, connection: sqlite3.Connection, applied: list[Any]) -> None:
        """Indexer thread, in a durable transaction: make sure it writes, so that its commit
        syncs the index file and the rows applied without a sync before it are safe to
        forget. A transaction that wrote nothing would not sync anything."""
        if self._undurable and not applied:
            connection.execute(
                "INSERT INTO index_meta (key, value) VALUES ('synced', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(time.time()),),
            )

    def _applied_by_indexer(self, applied: list[tuple[int, int]], durable: bool = True) -> None:
        """Indexer thread: have the writer forget these rows from the log, in its next
        transaction, or in one of their own if no write comes first; rows applied by a
        commit that was not ``durable`` wait for one that is."""
        if not durable:
            self._undurable.extend(applied)
            if applied:
                with self._apply_state:  # a durable apply will come, rows or none
                    self._sync_wanted = True
                    self._plan_apply_locked()
            return
        applied = self._undurable + applied
        self._undurable = []
        if not applied:
            return
        with self._apply_state:
            self._applied.extend(applied)
            many = len(self._applied) >= FORGET_AT
            later = not many and self._forget_timer is None
            if later:
                self._forget_timer = threading.Timer(FORGET_DELAY_SECONDS, self._forget_soon)
                self._forget_timer.daemon = True
                self._forget_timer.start()
        if many:
            # Waited for: the forget holds every process's write lock, and each of its
            # statements takes back the GIL. Left to run beside this thread's next chunk,
            # each waited for the switch interval: the index process held the lock 14 ms
            # per forget (5 % of the lock's time under create load), 2.5 ms waiting.
            self._forget_soon(wait=True)

    def _forget_soon(self, wait: bool = False) -> None:
        """Have the writer forget the applied rows in a transaction of their own (a write
        that comes first does it in its own: nothing is left then); ``wait``: until it did."""
        with self._apply_state:
            self._forget_timer = None
        with contextlib.suppress(RuntimeError):  # shut down: close() sweeps the log
            done = self._writer.submit(self._forget_now)
            if wait:
                done.result()

    def _take_applied(self) -> list[tuple[int, int]]:
        with self._apply_state:
            applied, self._applied = self._applied, []
        return applied

    def _forget_now(self) -> None:
        """Writer thread: forget the applied rows a write has not forgotten already."""
        with self._apply_state:
            if not self._applied:
                return
        try:
            applied = self._take_applied()
            self._in_transaction(lambda connection: forget_applied(connection, applied))
        except Exception:  # they stay in the log, shown applied; the next open sweeps them
            log.exception("Applied rows could not be removed from the index log now")

    def _sweep_log(self) -> None:
        """Writer thread: forget every applied row, whoever applied it (a process that
        ended before its writer forgot what its indexer applied leaves some behind)."""
        self._take_applied()
        self._in_transaction(
            lambda connection: connection.execute(
                "DELETE FROM index_pending WHERE seq <= "
                "(SELECT s.seq FROM index_state s WHERE s.rkey = index_pending.rkey)"
            )
        )

    def _apply_here(self, connection: sqlite3.Connection, types: frozenset[str] | None) -> None:
        """Writer thread, inside ``_in_transaction``: apply the pending rows of ``types``
        in this transaction, which then writes the index file too. They are forgotten by a
        later transaction, not this one: its commit makes the main file durable before the
        index file, and a log row must never be gone while its index rows may be lost."""
        self._hold_index_lock()
        computing = self._writer_computing(connection)
        self._applied_here.extend(apply_logged(connection, types, computing=computing))

    def _writer_computing(self, connection: sqlite3.Connection) -> Computing | None:
        """Writer thread: how to compute deferred log rows (the writer interns the
        parameters it meets)."""
        if self._index_of is None:
            return None
        return Computing(self._index_of, self._pid_function(connection))

    def _condition_matched(
        self,
        connection: sqlite3.Connection,
        records: Sequence[WriteRecord],
        job: Sequence[WriteRecord],
        written: FreshWrites | None,
        queued: FreshWrites | None,
    ) -> tuple[ConditionMatched | GuardViolated | None, bool]:
        """The first condition or guard of ``records`` (of ``job``) that a current
        resource breaks, and whether only a ``queued`` write breaks it; the job's own
        resources do not count against its guards. ``written``: this transaction's writes
        whose rows may still be in the log (None: the log was applied for these plans)."""
        search = SqliteSearch(connection, self._resolver(connection, remember=False))
        own = {(record.resource_type, record.resource_id) for record in job}

        def found(plan: SearchPlan, limit: int) -> tuple[list[Match], list[Match]]:
            """Up to ``limit`` current matches (more when some are fresh), and the queued."""
            stale = written.keys(plan) if written is not None else set()
            page = search.run(replace(plan, count=limit + len(stale), total="none"))
            settled = [
                (match.resource_type, match.resource_id, match.version_id)
                for match in page.matches
                if (match.resource_type, match.resource_id) not in stale
            ]
            if written is not None:
                settled += written.matching(plan)
            return settled, queued.matching(plan) if queued is not None else []

        for record in records:
            if record.unless_exists is not None:
                settled, pending = found(record.unless_exists, 1)
                if settled or pending:
                    breach = ConditionMatched(record.resource_type, record.resource_id)
                    return breach, not settled
            for guard in record.guards:
                settled, pending = found(guard.plan, len(own) + len(guard.tolerated) + 1)
                breaks = _breaks(guard, own, settled)
                if breaks or _breaks(guard, own, pending):
                    breach_guard = GuardViolated(guard, record.resource_type, record.resource_id)
                    return breach_guard, not breaks
        return None, False

    def _analyze(self) -> None:
        """Refresh the statistics SQLite's planner chooses indexes by (sampled, so it takes
        milliseconds): without them it guessed, at 100,000 resources, to walk a whole date
        index once per row of a sort and never answered.

        The index log is left without statistics. It is a queue: taken when it held a few
        rows (a process opening the store while another loads), they told the planner it
        always does, and forgetting 3,000 applied rows then scanned the log once for each
        (quadratic: 7-12 s of the writer's CPU, holding the write lock, at the end of one
        Synthea load in three). Without statistics the planner assumes a large table and
        looks each row up by its key."""
        connection = self._connection()
        connection.execute(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
        with self._write_lock.held(), self._index_lock.held():
            _committed(connection, _analyze_all_but_the_log)
            connection.execute("ANALYZE sqlite_master")  # this connection reloads them too

    def _in_transaction(
        self, work: Callable[[sqlite3.Connection], T], *, locked: bool = False
    ) -> T:
        """Run ``work`` in one write transaction (``locked``: the caller holds the write
        lock already); parameter ids it interned are cached only once committed, so a
        rollback can never leave the cache naming a pid that no row holds (another process
        would then intern the same parameter under another id)."""
        connection = self._connection()
        self._pending_pids.clear()
        lock = contextlib.nullcontext() if locked else self._write_lock.held()
        with lock, contextlib.ExitStack() as index_lock:
            self._held_index = index_lock
            # Deferred: the first write takes the main file's lock, which nobody else
            # holds (``_write_lock``). BEGIN IMMEDIATE would take the index file's as well.
            try:
                result = _committed(connection, work)
            except BaseException:
                self._pending_pids.clear()
                raise
            finally:
                self._held_index = None
                self._index_held = False
                applied_here, self._applied_here = self._applied_here, []
        self._pid_cache.update(self._pending_pids)
        self._pending_pids.clear()
        if applied_here:
            with self._apply_state:
                self._applied.extend(applied_here)  # committed, both files synced
        return result

    def _hold_index_lock(self) -> None:
        """Writer thread, inside ``_in_transaction``: take the index file's lock until the
        transaction ends, before it first reads that file (its snapshot must not be older
        than the lock, or writing the file would fail)."""
        if self._held_index is None:
            raise RuntimeError("the index file is written only inside a transaction")
        if not self._index_held:
            self._held_index.enter_context(self._index_lock.held())
            self._index_held = True

    def _in_index_transaction(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        """Indexer thread: run ``work`` in one transaction that writes the index file only
        (it reads the main file's log in the same snapshot). Not ``durable``: committed
        without an fsync (``synchronous=NORMAL``), for the applies a search waits for; what
        they applied is forgotten from the log only after a durable commit follows
        (``_applied_by_indexer``), which syncs the file, their commits included."""
        connection = self._connection()
        level = self._synchronous if durable else "NORMAL"
        if level != self._index_synchronous:
            connection.execute(f"PRAGMA {INDEX_SCHEMA}.synchronous={level}")
            self._index_synchronous = level
        interned: set[tuple[str, str, str]] = set()
        while True:
            try:
                with self._indexer_lock.held():
                    return _committed(connection, work)
            except MissingParameters as missing:  # rolled back: the writer interns them
                if missing.missing <= interned:  # cannot happen: they would be known now
                    raise RuntimeError(f"search parameters not interned: {missing}") from None
                interned |= missing.missing  # each round, a later chunk may name others
                self._writer.submit(self._intern, missing.missing).result()

    def _intern(self, parameters: Collection[tuple[str, str, str]]) -> None:
        """Writer thread: give these (resource type, code, kind) a pid, for the indexer."""

        def run(connection: sqlite3.Connection) -> None:
            pid = self._pid_function(connection)
            for owner, code, kind in sorted(parameters):
                pid(owner, code, kind)

        self._in_transaction(run)

    def _computing(self, connection: sqlite3.Connection) -> Computing | None:
        """Indexer thread: how to compute deferred log rows, with the pids known so far
        (cached, else read and cached: another process may have interned them; the index
        process never interns, so it reads each once)."""
        index_of = self._index_of
        if index_of is None:
            return None

        def known(owner: str, code: str, _kind: str) -> int | None:
            return self._known_pid(connection, owner, code)

        return Computing(index_of, known)

    _write_batch = staticmethod(write_batch)

    def _pid_function(self, connection: sqlite3.Connection) -> PidFunction:
        """Intern (resource type, code) -> pid; new ids are cached once committed."""

        def pid(owner: str, code: str, kind: str) -> int:
            found = self._pid_cache.get((owner, code)) or self._pending_pids.get((owner, code))
            if found is None:
                connection.execute(
                    "INSERT OR IGNORE INTO search_param (resource_type, code, kind) "
                    "VALUES (?, ?, ?)",
                    (owner, code, kind),
                )
                found = connection.execute(
                    "SELECT pid FROM search_param WHERE resource_type = ? AND code = ?",
                    (owner, code),
                ).fetchone()[0]
                self._pending_pids[(owner, code)] = found
            return found

        return pid

    async def replace_index(self, records: Sequence[IndexRecord]) -> int:
        def run(connection: sqlite3.Connection) -> int:
            self._apply_here(connection, None)  # a logged row must not come after
            replaced = []
            reindexed: list[tuple[int, IndexRecord]] = []
            for record in records:
                row = connection.execute(
                    "SELECT rkey, version_id, deleted, seq FROM resource_current "
                    "WHERE resource_type = ? AND id = ?",
                    (record.resource_type, record.resource_id),
                ).fetchone()
                if row is None or row[1] != record.version_id or row[2]:
                    continue
                reindexed.append((row[0], record))
                replaced.append(
                    LoggedIndex(
                        row[0], record.resource_type, record.entries, record.full_text, True, row[3]
                    )
                )
            claims = read_book(connection, [], sorted({rkey for rkey, _ in reindexed}))
            for rkey, record in reindexed:
                claims.replace(rkey, record.resource_type, record.entries, record.claims)
            log_index(connection, replaced, self._pid_function(connection))
            # The index holds these versions already: say it does not, or they would not be
            # pending (the lock is held since the first apply above).
            connection.execute(
                "DELETE FROM index_state WHERE rkey IN (SELECT value FROM json_each(?))",
                (json.dumps([item.rkey for item in replaced]),),
            )
            self._apply_here(connection, None)
            claims.write(connection)
            return len(replaced)

        return await self._on_writer(lambda: self._in_transaction(run))

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
            behind = connection.execute(
                "SELECT COUNT(*) FROM resource_current c JOIN index_state s ON s.rkey = c.rkey "
                "WHERE s.seq < c.seq AND NOT EXISTS "
                "(SELECT 1 FROM index_pending p WHERE p.rkey = c.rkey AND p.seq = c.seq)"
            ).fetchone()[0]
            if behind:
                problems.append(
                    f"search index: {behind} resources are indexed at a version older than "
                    "their current one, and none is waiting in the index log (an index file "
                    "restored from an older backup?): run `rofecare reindex`"
                )
            problems += [
                f"claim {row[0]!r} is held by {row[1] or f'resource key {row[2]}'}, "
                "which is not a current resource"
                for row in connection.execute(
                    "SELECT k.claim, c.resource_type || '/' || c.id, k.rkey "
                    "FROM resource_claim k LEFT JOIN resource_current c ON c.rkey = k.rkey "
                    "WHERE c.rkey IS NULL OR c.deleted = 1 ORDER BY k.claim, k.rkey"
                )
            ]
            return problems

        return await self._on_reader(run)


DEFERRED_BYTES_PER_ROW = 100
"""A record indexed later counts, towards ``BULK_APPLY_ROWS``, as a row per this many bytes
of its body: its rows are not known before they are computed, and the server's AuditEvents
have about that many (one naming a written Patient: ~1,000 bytes, 11 rows)."""


def _index_rows(record: WriteRecord) -> int:
    """The index rows ``record`` adds to the log, counted or estimated."""
    if record.index_later and record.body is not None:
        return max(1, len(record.body) // DEFERRED_BYTES_PER_ROW)
    return len(record.entries)


AHEAD_NICENESS = 10


def _yield_to_writers() -> None:
    """Run this thread ``AHEAD_NICENESS`` steps nicer than its process (Linux sets the
    priority of the one thread its id names; elsewhere, or where refused, it stays).

    Why: the applier's computing is half of its CPU and holds no lock, while every
    worker's writer thread holds the write lock of all of them; on two cores, each time the
    scheduler ran the computing instead of a writer that woke, every write waited. Nicer,
    it takes the CPU the workers leave (they are bound by the write lock, not the CPU) and
    still keeps up. Under benchmarks/search.py's creates, two runs each: 2,205-2,239
    creates/s, 2,250-2,316 with this thread niced, 2,364-2,427 with the whole index
    process at nice 10 (its backlog bounded at 2,000-6,500 resources, one round's worth).
    Only the computing, though: the index file's lock is taken by the indexer thread, at
    the process's priority, so a search waiting for that lock does not wait behind a
    thread the scheduler ranks below every worker."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, now + AHEAD_NICENESS))


def _committed(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` in one deferred transaction of ``connection``, committed, or rolled back if
    it (or the commit) fails."""
    connection.execute("BEGIN")
    try:
        result = work(connection)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:  # a failed COMMIT may have ended it already
            connection.execute("ROLLBACK")
        raise
    return result


def _analyze_all_but_the_log(connection: sqlite3.Connection) -> None:
    connection.execute("ANALYZE")  # both files
    connection.execute(_FORGET_QUEUE_STATISTICS)


def _index_ahead(connection: sqlite3.Connection) -> bool:
    """Whether the index file holds a version the main file never assigned."""
    row = connection.execute(
        f"SELECT value FROM {INDEX_SCHEMA}.index_meta WHERE key = 'applied_seq'"
    ).fetchone()
    applied = int(row[0]) if row else 0
    return applied > _last_seq(connection)


def _last_seq(connection: sqlite3.Connection) -> int:
    """The last version sequence number the main file assigned (0 in an empty store)."""
    row = connection.execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'resource_version'"
    ).fetchone()
    return int(row[0]) if row else 0


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


def _breaks(guard: WriteGuard, own: set[tuple[str, str]], matches: list[Match]) -> bool:
    """Whether one of ``matches``, not a resource of the guarded job (``own``), counts."""
    return any(
        (kind, name) not in own and guard.counts(kind, name, version)
        for kind, name, version in matches
    )


def _condition_types(records: Sequence[WriteRecord]) -> frozenset[str] | None:
    """The types whose index the conditions and guards of ``records`` read (None: any)."""
    types: set[str] = set()
    for record in records:
        plans = [guard.plan for guard in record.guards]
        if record.unless_exists is not None:
            plans.append(record.unless_exists)
        for plan in plans:
            found = indexed_types(plan)
            if found is None:
                return None
            types |= found
    return frozenset(types)
