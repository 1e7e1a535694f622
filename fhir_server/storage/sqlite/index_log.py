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

What keeps search exact (the rows are written in the transaction of their version, as
before; only their place changes): a search first looks, inside its own read snapshot, for
logged rows of the resource types it reads (``plan.indexed_types``), and has them applied before it
reads any index table (``SqliteStore.search``). Conditional writes and guards apply them
inside their write transaction. A logged row always describes the newest version of its
resource (a later write replaces it), and applying one replaces every index row of its
resource, so applying is idempotent and order-free.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_server.search.values import FullText, IndexEntry
from fhir_server.storage.sqlite.index_rows import INDEX_TABLE_NAMES, PidFunction, rows_by_table
from fhir_server.storage.sqlite.rows import MAX_ROWS_PER_STATEMENT, insert_rows
from fhir_server.storage.sqlite.schema import INDEX_TABLES


@dataclass(frozen=True)
class LoggedIndex:
    """What one version leaves in the index: ``entries`` None when it is a deletion."""

    rkey: int
    resource_type: str
    entries: Sequence[IndexEntry] | None
    full_text: FullText | None
    existed: bool  # its resource may have rows in the index tables already


_LOG_COLUMNS = (
    "rkey",
    "resource_type",
    "existed",
    *INDEX_TABLE_NAMES,
    "narrative",
    "content",
    "repeated",
)
_LOG_INSERT = f"INSERT INTO index_pending ({', '.join(_LOG_COLUMNS)})"
_LOG_REPLACE = " ON CONFLICT (rkey) DO UPDATE SET " + ", ".join(
    [f"{column} = excluded.{column}" for column in _LOG_COLUMNS[3:]]
    + ["existed = max(index_pending.existed, excluded.existed)"]
)


def _apply_statement(table: str, columns: tuple[str, ...]) -> str:
    """Rows of the log's JSON column ``table`` into the table itself, without Python: each
    logged row is ``[n, pid, grp, *values]``."""
    names = ("n", "pid", "grp", *columns)
    values = ", ".join(f"json_extract(r.value, '$[{index}]')" for index in range(len(names)))
    return (
        f"INSERT INTO {table} (rkey, {', '.join(names)}) SELECT p.rkey, {values} "
        f"FROM index_pending p, json_each(p.{table}) r WHERE p.rkey IN "
    )


_APPLY = tuple(_apply_statement(table, columns) for table, columns in INDEX_TABLES.values())


def log_index(
    connection: sqlite3.Connection, items: Iterable[LoggedIndex], pid: PidFunction
) -> None:
    """Log the rows of ``items``; a resource logged already keeps only the newest."""
    logged = []
    for item in items:
        if not item.existed and not item.entries and not _has_text(item.full_text):
            continue  # nothing to add and nothing to replace (search indexing is off)
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        if item.entries is not None:
            by_table = rows_by_table(item.rkey, item.resource_type, item.entries, pid)
        tables = [
            _json([row[1:] for row in by_table[table]]) if table in by_table else None
            for table in INDEX_TABLE_NAMES
        ]
        text = item.full_text if item.entries is not None and _has_text(item.full_text) else None
        narrative, content = (text.narrative, text.content) if text is not None else (None, None)
        repeated = _json(sorted(_repeated(by_table))) if by_table else None
        row = (item.rkey, item.resource_type, int(item.existed), *tables)
        logged.append((*row, narrative, content, repeated))
    insert_rows(connection, _LOG_INSERT, logged, _LOG_REPLACE)


def logged_among(connection: sqlite3.Connection, types: Collection[str] | None) -> bool:
    """Whether rows of ``types`` (None: of any type) wait in the log."""
    if types is None:
        row = connection.execute("SELECT 1 FROM index_pending LIMIT 1").fetchone()
    elif not types:
        return False
    else:
        listed = sorted(types)
        row = connection.execute(
            "SELECT 1 FROM index_pending "
            f"WHERE resource_type IN ({', '.join('?' * len(listed))}) LIMIT 1",
            listed,
        ).fetchone()
    return row is not None


def apply_logged(
    connection: sqlite3.Connection,
    types: Collection[str] | None = None,
    limit: int | None = None,
) -> int:
    """Move logged rows (of ``types``; None: all, at most ``limit`` resources) into the
    index tables, within the caller's write transaction; the number of resources moved.

    The rows go from the log's JSON to the tables in SQL (``json_each``), so the writer
    thread spends no Python per row and holds no GIL while it works."""
    sql = "SELECT rkey, existed FROM index_pending"
    args: list[Any] = []
    if types is not None:
        if not types:
            return 0
        listed = sorted(types)
        sql += f" WHERE resource_type IN ({', '.join('?' * len(listed))})"
        args += listed
    sql += " ORDER BY rkey"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    logged = connection.execute(sql, args).fetchall()
    for start in range(0, len(logged), MAX_ROWS_PER_STATEMENT):
        chunk = logged[start : start + MAX_ROWS_PER_STATEMENT]
        clear_index(connection, [rkey for rkey, existed in chunk if existed])
        rkeys = [rkey for rkey, _ in chunk]
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
            "UPDATE search_param SET multiple = 1 WHERE multiple = 0 AND pid IN "
            "(SELECT r.value FROM index_pending p, json_each(p.repeated) r "
            f"WHERE p.rkey IN {marks})",
            rkeys,
        )
        connection.execute(f"DELETE FROM index_pending WHERE rkey IN {marks}", rkeys)
    return len(logged)


def clear_index(connection: sqlite3.Connection, rkeys: Sequence[int]) -> None:
    """Remove every index row and the full text of the resources ``rkeys``."""
    for start in range(0, len(rkeys), MAX_ROWS_PER_STATEMENT):
        chunk = rkeys[start : start + MAX_ROWS_PER_STATEMENT]
        marks = ", ".join("?" * len(chunk))
        for table in INDEX_TABLE_NAMES:
            connection.execute(f"DELETE FROM {table} WHERE rkey IN ({marks})", chunk)
        connection.execute(f"DELETE FROM idx_text WHERE rowid IN ({marks})", chunk)


def _repeated(by_table: dict[str, list[tuple[Any, ...]]]) -> set[int]:
    """Parameters with two plain (not composite: grp 0) values in one resource: they turn
    ``search_param.multiple`` on when applied."""
    repeated: set[int] = set()
    for rows in by_table.values():
        seen: set[int] = set()
        for row in rows:  # (rkey, n, pid, grp, *values)
            if row[3] == 0 and row[2] in seen:
                repeated.add(row[2])
            seen.add(row[2])
    return repeated


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _has_text(text: FullText | None) -> bool:
    return text is not None and bool(text.narrative or text.content)
