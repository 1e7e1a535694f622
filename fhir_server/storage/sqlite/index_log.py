"""The index log: a write logs its search-index rows beside its version, and the rows are
applied to the typed index tables in batches, always before a search reads them.

Why: each index row is a random insert into its table's ``(pid, value)`` index, and every
index page an insert touches is written again to the WAL at each commit. A Patient and its
AuditEvent have ~48 index rows, so an indexed create wrote ~48 pages per commit against ~9
without indexing and ran at 34 % of the unindexed rate (docs/benchmarks.md). Logged, a
write costs one row in ``index_pending`` (a small, hot table; each index table's rows are a
JSON column); applied hundreds at a time, rows that land on the same index page share one
page write. Measured by replaying the captured transactions of 3,500 Patient creates: 2.9
ms of SQLite per group commit with the rows inserted in it, 1.3-1.6 ms logged and applied
every 140-560 creates, 1.0-1.3 ms unindexed. The rows go from JSON to the tables in SQL
(``json_each``): the writer thread holds Python's GIL for none of them.

The index tables are in a file of their own (schema.py), so applying takes that file's
write lock and not the main file's: writes of resources go on meanwhile. An applied row
stays in the log until the main file's writer next commits (``forget_applied``); until
then ``index_state`` (in the index file) shows it applied: a logged row is pending exactly
while the index holds an older version of its resource (``PENDING``).

What keeps search exact (the rows are written in the transaction of their version, as
before; only their place changes): a search first looks, inside its own read snapshot, for
pending rows of the resource types it reads (``plan.indexed_types``), and has them applied
before it reads any index table (``SqliteStore.search``). That look reads the main file
first and the index file second, so the index file's snapshot is never older than the log
it is compared with: a row forgotten from the log was applied before it was forgotten.
Conditional writes and guards apply pending rows inside their write transaction. A logged
row always describes the newest version of its resource (a later write replaces it), and
applying one replaces every index row of its resource, so applying is idempotent and
order-free.

A deferred row (``deferred = 1``, storage/base.py ``WriteRecord.index_later``) holds no
rows: whoever applies it computes them from the version it names (``Computing``) and
inserts them as they are (``_Computed``). Why: the server's writes had their entries
computed on the event loop and carried as JSON through the writer, all while the write
waited and in the worker's GIL; deferred, a write logs a few bytes, and under ``serve
--workers N`` a process of its own computes and applies them (index_process.py;
docs/benchmarks.md, "What limits it"). ``rofecare load`` still logs JSON rows, computed in
its parallel processes. A parameter never interned before has no pid yet, and only the
writer interns: the applier then stops (``MissingParameters``), the store has the writer
intern them, and applies again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_server.search.values import FullText, IndexEntry
from fhir_server.storage.base import IndexOf
from fhir_server.storage.sqlite.index_rows import (
    INDEX_TABLE_NAMES,
    ROW_VALUES,
    PidFunction,
)
from fhir_server.storage.sqlite.rows import MAX_ROWS_PER_STATEMENT, insert_rows
from fhir_server.storage.sqlite.schema import INDEX_TABLES


@dataclass(frozen=True)
class LogRow:
    """The ``index_pending`` columns of one version, without its rkey: each index table's
    rows as JSON (``[n, pid, grp, *values]``), the full text, and the parameters it repeats.

    Why apart from the write: nothing here depends on the transaction, so ``SqliteStore``
    builds it on the event loop before queuing the write, and the writer thread, which
    holds the database's write lock for every process, runs no Python per index row."""

    tables: tuple[str | None, ...]  # in INDEX_TABLE_NAMES order
    narrative: str | None
    content: str | None
    repeated: str | None


@dataclass(frozen=True)
class LoggedIndex:
    """What one version leaves in the index: ``entries`` None when it is a deletion.
    ``prepared``: its row built in advance (``log_row``), else built when it is logged."""

    rkey: int
    resource_type: str
    entries: Sequence[IndexEntry] | None
    full_text: FullText | None
    existed: bool  # its resource may have rows in the index tables already
    seq: int  # the version's sequence number
    prepared: LogRow | None = None
    deferred: bool = False  # its rows are computed from the version when applied


@dataclass(frozen=True)
class Computing:
    """How an applier computes deferred rows: the entries of a resource, and the pid of a
    parameter (None when it has none yet; see ``MissingParameters``)."""

    index_of: IndexOf
    pid: Callable[[str, str, str], int | None]


class MissingParameters(Exception):
    """Deferred rows name parameters that have no pid yet: (resource type, code, kind)."""

    def __init__(self, missing: set[tuple[str, str, str]]) -> None:
        super().__init__(f"search parameters without an id yet: {sorted(missing)}")
        self.missing = missing


_LOG_COLUMNS = (
    "rkey",
    "resource_type",
    "existed",
    "seq",
    *INDEX_TABLE_NAMES,
    "narrative",
    "content",
    "repeated",
    "deferred",
)
_LOG_INSERT = f"INSERT INTO index_pending ({', '.join(_LOG_COLUMNS)})"
_LOG_REPLACE = " ON CONFLICT (rkey) DO UPDATE SET " + ", ".join(
    [f"{column} = excluded.{column}" for column in _LOG_COLUMNS[3:]]
    + ["existed = max(index_pending.existed, excluded.existed)"]
)


def _apply_statement(table: str, columns: tuple[str, ...]) -> str:
    """Rows of the log's JSON column ``table`` into the table itself, without Python: each
    logged row is ``[n, pid, grp, *values]``. ``->>`` rather than ``json_extract``: the
    same SQL values, and the token and string rows, most of the log, applied 9 and 23 %
    faster (no path text to parse per value)."""
    names = ("n", "pid", "grp", *columns)
    values = ", ".join(f"r.value ->> {index}" for index in range(len(names)))
    return (
        f"INSERT INTO {table} (rkey, {', '.join(names)}) SELECT p.rkey, {values} "
        f"FROM index_pending p, json_each(p.{table}) r WHERE p.rkey IN "
    )


_APPLY = tuple(_apply_statement(table, columns) for table, columns in INDEX_TABLES.values())
_INSERT_COMPUTED = {
    table: f"INSERT INTO {table} (rkey, n, pid, grp, {', '.join(columns)})"
    for table, columns in INDEX_TABLES.values()
}
_ROW_OF = {
    entry_class: (kind, INDEX_TABLES[kind][0], values)
    for entry_class, (kind, values) in ROW_VALUES.items()
}
"""Entry class -> (its search type, its table, its values), looked up once per entry."""


def log_row(
    resource_type: str,
    entries: Sequence[IndexEntry],
    full_text: FullText | None,
    pid: Callable[[str, str, str], int | None],
) -> LogRow | None:
    """The log columns of a version with ``entries``; None when ``pid`` does not know one of
    its parameters yet (only the writer may intern a new one, inside its transaction)."""
    rows = _table_rows(resource_type, entries, pid, ())
    if rows is None:
        return None
    by_table, repeated = rows
    tables = tuple(
        _json(by_table[table]) if table in by_table else None for table in INDEX_TABLE_NAMES
    )
    text = full_text if _has_text(full_text) else None
    return LogRow(
        tables,
        text.narrative if text is not None else None,
        text.content if text is not None else None,
        _json(sorted(repeated)) if by_table else None,
    )


def _table_rows(
    resource_type: str,
    entries: Sequence[IndexEntry],
    pid: Callable[[str, str, str], int | None],
    head: tuple[Any, ...],
) -> tuple[dict[str, list[tuple[Any, ...]]], set[int]] | None:
    """Each index table's rows of ``entries``, ``(*head, n, pid, grp, *values)``, and the
    parameters they hold two plain values of (``search_param.multiple``); None when ``pid``
    does not know one of their parameters."""
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    repeated: set[int] = set()
    seen: set[int] = set()
    pids: dict[str, int] = {}  # a parameter's values come in a run: one lookup each
    for number, entry in enumerate(entries):
        kind, table, values = _ROW_OF[type(entry)]
        found = pids.get(entry.param)
        if found is None:
            found = pid(resource_type, entry.param, kind)
            if found is None:
                return None
            pids[entry.param] = found
        if entry.group == 0:  # two plain values of one parameter turn search_param.multiple on
            if found in seen:
                repeated.add(found)
            seen.add(found)
        row = (*head, number, found, entry.group, *values(entry))
        if table in by_table:
            by_table[table].append(row)
        else:
            by_table[table] = [row]
    return by_table, repeated


_NOTHING = LogRow((None,) * len(INDEX_TABLE_NAMES), None, None, None)


def log_index(
    connection: sqlite3.Connection, items: Iterable[LoggedIndex], pid: PidFunction
) -> None:
    """Log the rows of ``items``; a resource logged already keeps only the newest."""
    logged = []
    for item in items:
        deferred = item.deferred and item.entries is not None
        if not (deferred or item.existed or item.entries or _has_text(item.full_text)):
            continue  # nothing to add and nothing to replace (search indexing is off)
        row = _NOTHING  # a deletion (applying it clears the resource's rows), or deferred
        if item.entries is not None and not deferred:
            built = item.prepared or log_row(item.resource_type, item.entries, item.full_text, pid)
            if built is None:  # cannot happen: the writer's pid function interns them all
                raise RuntimeError(f"a search parameter of {item.resource_type} has no id")
            row = built
        head = (item.rkey, item.resource_type, int(item.existed), item.seq, *row.tables)
        logged.append((*head, row.narrative, row.content, row.repeated, int(deferred)))
    insert_rows(connection, _LOG_INSERT, logged, _LOG_REPLACE)


PENDING = "NOT EXISTS (SELECT 1 FROM index_state s WHERE s.rkey = p.rkey AND s.seq >= p.seq)"
"""Of a logged row ``p``: the index file does not hold its version yet."""


def logged_among(connection: sqlite3.Connection, types: Collection[str] | None) -> bool:
    """Whether pending rows of ``types`` (None: of any type) wait in the log."""
    if types is None:
        row = connection.execute(f"SELECT 1 FROM index_pending p WHERE {PENDING} LIMIT 1")
    elif not types:
        return False
    else:
        listed = sorted(types)
        row = connection.execute(
            "SELECT 1 FROM index_pending p "
            f"WHERE p.resource_type IN ({', '.join('?' * len(listed))}) AND {PENDING} LIMIT 1",
            listed,
        )
    return row.fetchone() is not None


def apply_logged(
    connection: sqlite3.Connection,
    types: Collection[str] | None = None,
    limit: int | None = None,
    excluding: Collection[str] = (),
    through_seq: int | None = None,
    computing: Computing | None = None,
    ahead: ComputedAhead | None = None,
) -> list[tuple[int, int]]:
    """Move pending rows (of ``types``; None: all but ``excluding``, at most ``limit``
    resources, of versions up to ``through_seq``) into the index tables, within the
    caller's transaction, which writes the index file (the caller holds its lock); the
    (rkey, seq) of each row moved, for ``forget_applied``. Deferred rows are computed with
    ``computing`` (``MissingParameters``: nothing was applied); without it they stay in
    the log, for a store that can (one opened by a tool, not by the server's core).

    The rows go from the log's JSON to the tables in SQL (``json_each``), so the applying
    thread spends no Python per row and holds no GIL while it works; a deferred row's
    entries are computed in Python first (one FHIRPath pass over its version), unless
    ``ahead`` holds them for the version the log still names (``compute_ahead``)."""
    if types is not None and not types:
        return []
    sql, args = _pending(
        "p.rkey, p.existed, p.seq, p.deferred", "", types, excluding, through_seq, limit
    )
    logged = connection.execute(sql, args).fetchall()
    if computing is None:
        logged = [row for row in logged if not row[3]]
    for start in range(0, len(logged), MAX_ROWS_PER_STATEMENT):
        chunk = logged[start : start + MAX_ROWS_PER_STATEMENT]
        deferred = [(rkey, seq) for rkey, _, seq, later in chunk if later]
        computed = None
        if deferred and computing is not None:  # without it, none were left in ``logged``
            computed = _compute_deferred(connection, deferred, computing, ahead or {})
        clear_index(connection, [rkey for rkey, existed, _, _ in chunk if existed])
        rkeys = [rkey for rkey, _, _, _ in chunk]
        logged_rows = [rkey for rkey, _, _, later in chunk if not later]
        if logged_rows:  # a deferred row has nothing to move: nine statements saved
            _move_rows(connection, logged_rows)
        if computed is not None:
            computed.insert(connection)
        marks = f"({', '.join('?' * len(rkeys))})"
        connection.execute(
            "INSERT INTO index_state (rkey, seq) "
            f"SELECT rkey, seq FROM index_pending WHERE rkey IN {marks} "
            "ON CONFLICT (rkey) DO UPDATE SET seq = excluded.seq",
            rkeys,
        )
        note_applied_seq(connection, max(seq for _, _, seq, _ in chunk))
    return [(rkey, seq) for rkey, _, seq, _ in logged]


def _move_rows(connection: sqlite3.Connection, rkeys: Sequence[int]) -> None:
    """The rows, full text and repeated parameters logged for ``rkeys`` (none for a
    deferred row) into the index file's tables."""
    marks = f"({', '.join('?' * len(rkeys))})"
    for statement in _APPLY:
        connection.execute(statement + marks, rkeys)
    connection.execute(
        "INSERT INTO idx_text (rowid, narrative, content) "
        f"SELECT rkey, narrative, content FROM index_pending WHERE rkey IN {marks} "
        "AND narrative IS NOT NULL",
        rkeys,
    )
    connection.execute(
        "INSERT OR IGNORE INTO param_multiple (pid) "
        f"SELECT r.value FROM index_pending p, json_each(p.repeated) r WHERE p.rkey IN {marks}",
        rkeys,
    )


@dataclass(frozen=True)
class ResourceRows:
    """The index rows of one version, computed from it."""

    seq: int  # the version's
    rows: dict[str, list[tuple[Any, ...]]]  # table -> its rows, each starting with the rkey
    repeated: set[int]  # parameters of which it holds two plain values
    text: tuple[int, str | None, str | None] | None  # (rkey, narrative, content)


ComputedAhead = dict[int, ResourceRows]
"""Deferred rows computed before their apply, by rkey (``compute_ahead``)."""


def compute_ahead(
    connection: sqlite3.Connection,
    computing: Computing,
    limit: int,
    excluding: Collection[str] = (),
) -> ComputedAhead:
    """The rows of the deferred log rows that ``apply_logged`` with ``limit`` and
    ``excluding`` would apply now, computed in the caller's read transaction, before it
    takes the index file's lock: a version never changes, so what is computed for one
    stays right as long as the log names that version. Why: computing is half of applying
    (the FHIRPath pass in Python), and the lock kept a search that waited for rows of its
    types waiting through it too. A row whose parameter has no pid yet is left out (it is
    computed, and its parameter interned, when applied)."""
    sql, args = _pending(
        "p.rkey, p.seq, v.resource_type, v.body",
        " JOIN resource_version v ON v.seq = p.seq",
        None,
        excluding,
        None,
        limit,
        deferred_only=True,
    )
    ahead: ComputedAhead = {}
    pid = _chunk_pids(computing)
    for rkey, seq, resource_type, body in connection.execute(sql, args).fetchall():
        if body is not None:
            computed = _rows_of(rkey, seq, resource_type, body, computing, pid)
            if not isinstance(computed, set):
                ahead[rkey] = computed
    return ahead


def _pending(
    columns: str,
    join: str,
    types: Collection[str] | None,
    excluding: Collection[str],
    through_seq: int | None,
    limit: int | None,
    *,
    deferred_only: bool = False,
) -> tuple[str, list[Any]]:
    """The query of the pending log rows ``apply_logged`` applies, in rkey order."""
    sql = f"SELECT {columns} FROM index_pending p{join} WHERE {PENDING}"
    args: list[Any] = []
    if types is not None:
        listed = sorted(types)
        sql += f" AND p.resource_type IN ({', '.join('?' * len(listed))})"
        args += listed
    elif excluding:
        listed = sorted(excluding)
        sql += f" AND p.resource_type NOT IN ({', '.join('?' * len(listed))})"
        args += listed
    if through_seq is not None:
        sql += " AND p.seq <= ?"
        args.append(through_seq)
    if deferred_only:
        sql += " AND p.deferred"
    sql += " ORDER BY p.rkey"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


class _Computed:
    """The index rows of deferred log rows, computed from their versions: inserted as they
    are, not through the log's JSON (``_APPLY``), which would be built in Python only to be
    parsed again in SQL: applying Patients and their AuditEvents went from 142 to 120 us of
    CPU per resource (applying 14,686 logged in process)."""

    def __init__(self, resources: Iterable[ResourceRows]) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.texts: list[tuple[int, str | None, str | None]] = []
        self.repeated: set[int] = set()
        for resource in resources:
            for table, table_rows in resource.rows.items():
                if table in self.rows:
                    self.rows[table] += table_rows
                else:
                    self.rows[table] = list(table_rows)
            self.repeated |= resource.repeated
            if resource.text is not None:
                self.texts.append(resource.text)

    def insert(self, connection: sqlite3.Connection) -> None:
        for table, rows in self.rows.items():
            insert_rows(connection, _INSERT_COMPUTED[table], rows)
        insert_rows(connection, "INSERT INTO idx_text (rowid, narrative, content)", self.texts)
        insert_rows(
            connection,
            "INSERT OR IGNORE INTO param_multiple (pid)",
            [(found,) for found in sorted(self.repeated)],
        )


def _compute_deferred(
    connection: sqlite3.Connection,
    deferred: Sequence[tuple[int, int]],
    computing: Computing,
    ahead: ComputedAhead,
) -> _Computed:
    """The rows of the deferred log rows ``deferred`` ((rkey, seq) each), computed from the
    versions they name, or taken from ``ahead`` when it holds that version's."""
    ready: list[ResourceRows] = []
    rkeys: list[int] = []
    for rkey, seq in deferred:
        found = ahead.get(rkey)
        if found is not None and found.seq == seq:
            ready.append(found)
        else:
            rkeys.append(rkey)
    missing: set[tuple[str, str, str]] = set()
    if rkeys:
        marks = f"({', '.join('?' * len(rkeys))})"
        versions = connection.execute(
            "SELECT p.rkey, p.seq, v.resource_type, v.body FROM index_pending p "
            f"JOIN resource_version v ON v.seq = p.seq WHERE p.rkey IN {marks}",
            rkeys,
        ).fetchall()
        pid = _chunk_pids(computing)
        for rkey, seq, resource_type, body in versions:
            if body is None:  # a deletion is never deferred; nothing to index, should one be
                continue
            computed = _rows_of(rkey, seq, resource_type, body, computing, pid)
            if isinstance(computed, set):
                missing |= computed
            else:
                ready.append(computed)
    if missing:
        raise MissingParameters(missing)
    return _Computed(ready)


def _chunk_pids(computing: Computing) -> Callable[[str, str, str], int | None]:
    """``computing.pid``, remembered for a chunk: its resources share their parameters."""
    known: dict[tuple[str, str], int] = {}

    def pid(owner: str, code: str, kind: str) -> int | None:
        found = known.get((owner, code))
        if found is None:
            found = computing.pid(owner, code, kind)
            if found is not None:
                known[(owner, code)] = found
        return found

    return pid


def _rows_of(
    rkey: int,
    seq: int,
    resource_type: str,
    body: bytes,
    computing: Computing,
    pid: Callable[[str, str, str], int | None],
) -> ResourceRows | set[tuple[str, str, str]]:
    """The rows of version ``seq`` of ``rkey``, or the parameters they name that have no
    pid yet."""
    entries, text = computing.index_of(orjson.loads(body))
    rows = _table_rows(resource_type, entries, pid, (rkey,))
    if rows is None:
        return _without_pid(resource_type, entries, computing.pid)
    by_table, repeated = rows
    has_text = text is not None and _has_text(text)
    return ResourceRows(
        seq,
        by_table,
        repeated,
        (rkey, text.narrative, text.content) if text is not None and has_text else None,
    )


def _without_pid(
    resource_type: str,
    entries: Iterable[IndexEntry],
    pid: Callable[[str, str, str], int | None],
) -> set[tuple[str, str, str]]:
    return {
        (resource_type, entry.param, _ROW_OF[type(entry)][0])
        for entry in entries
        if pid(resource_type, entry.param, _ROW_OF[type(entry)][0]) is None
    }


def note_applied_seq(connection: sqlite3.Connection, seq: int) -> None:
    """Keep the newest version sequence number the index file holds (``applied_seq``): an
    index file ahead of its main file (the main file restored from a backup alone) is
    found by it when the store opens."""
    connection.execute(
        "INSERT INTO index_meta (key, value) VALUES ('applied_seq', ?) ON CONFLICT (key) "
        "DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        (seq,),
    )


def forget_applied(connection: sqlite3.Connection, applied: Sequence[tuple[int, int]]) -> None:
    """Delete from the log the rows ``apply_logged`` moved, unless a newer version replaced
    them meanwhile; within a write transaction of the main file.

    The (rkey, seq) pairs come from the applier, not from ``index_state``: reading the
    index file here would start a snapshot of it in the writer's transaction, which could
    then not write that file (a conditional write applies the log) after another commit."""
    if applied:
        connection.execute(
            "DELETE FROM index_pending WHERE rkey IN (SELECT p.rkey FROM json_each(?) applied "
            "JOIN index_pending p ON p.rkey = applied.value ->> 0 "
            "WHERE p.seq <= applied.value ->> 1)",
            (_json(applied),),
        )


def clear_index(connection: sqlite3.Connection, rkeys: Sequence[int]) -> None:
    """Remove every index row and the full text of the resources ``rkeys``."""
    for start in range(0, len(rkeys), MAX_ROWS_PER_STATEMENT):
        chunk = rkeys[start : start + MAX_ROWS_PER_STATEMENT]
        marks = ", ".join("?" * len(chunk))
        for table in INDEX_TABLE_NAMES:
            connection.execute(f"DELETE FROM {table} WHERE rkey IN ({marks})", chunk)
        connection.execute(f"DELETE FROM idx_text WHERE rowid IN ({marks})", chunk)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _has_text(text: FullText | None) -> bool:
    return text is not None and bool(text.narrative or text.content)
