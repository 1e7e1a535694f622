"""The index log: a write logs its search-index rows beside its version, and the rows are
applied to the typed index tables in batches, always before a search reads them.

Why: each index row is a random insert into its table's ``(pid, value)`` index, and every
index page an insert touches is written again to the WAL at each commit. A Patient and its
AuditEvent have ~48 index rows, so an indexed create wrote ~48 pages per commit against ~9
without indexing and ran at 34 % of the unindexed rate (docs/benchmarks.md). Logged, a
write costs one row in ``index_pending`` (a small, hot table); applied hundreds at a time,
rows that land on the same index page share one page write. Measured by replaying the
captured transactions of 3,500 Patient creates: 2.9 ms of SQLite per group commit with the
rows inserted in it, 1.3-1.6 ms logged and applied every 140-560 creates, 1.0-1.3 ms
unindexed.

What keeps search exact (the rows are written in the transaction of their version, as
before; only their place changes): a search first looks, inside its own read snapshot, for
logged rows of the resource types it reads (``plan_types``), and has them applied before it
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
from fhir_server.storage.sqlite.index_rows import (
    INDEX_TABLE_NAMES,
    INSERT_HEADS,
    PidFunction,
    rows_by_table,
)
from fhir_server.storage.sqlite.rows import MAX_ROWS_PER_STATEMENT, insert_rows


@dataclass
class MultipleSets:
    """Parameters known to hold several values in a resource (committed), and those found
    so in the transaction under way."""

    known: set[int]
    new: set[int]


@dataclass(frozen=True)
class LoggedIndex:
    """What one version leaves in the index: ``entries`` None when it is a deletion."""

    rkey: int
    resource_type: str
    entries: Sequence[IndexEntry] | None
    full_text: FullText | None
    existed: bool  # its resource may have rows in the index tables already


def log_index(
    connection: sqlite3.Connection, items: Iterable[LoggedIndex], pid: PidFunction
) -> None:
    """Log the rows of ``items``; a resource logged already keeps only the newest."""
    logged = []
    for item in items:
        if not item.existed and not item.entries and not _has_text(item.full_text):
            continue  # nothing to add and nothing to replace (search indexing is off)
        payload = None
        if item.entries is not None:
            tables = rows_by_table(item.rkey, item.resource_type, item.entries, pid)
            text = item.full_text
            words = [text.narrative, text.content] if text and _has_text(text) else None
            payload = orjson.dumps(
                [{table: [row[1:] for row in rows] for table, rows in tables.items()}, words]
            )
        logged.append((item.rkey, item.resource_type, int(item.existed), payload))
    insert_rows(
        connection,
        "INSERT INTO index_pending (rkey, resource_type, existed, payload)",
        logged,
        " ON CONFLICT (rkey) DO UPDATE SET payload = excluded.payload, "
        "existed = max(index_pending.existed, excluded.existed)",
    )


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
    multiple: MultipleSets | None,
    types: Collection[str] | None = None,
    limit: int | None = None,
) -> int:
    """Move logged rows (of ``types``; None: all, at most ``limit`` resources) into the
    index tables, within the caller's write transaction; the number of resources moved."""
    sql = "SELECT rkey, existed, payload FROM index_pending"
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
    if not logged:
        return 0
    rkeys = [rkey for rkey, _, _ in logged]
    clear_index(connection, [rkey for rkey, existed, _ in logged if existed])
    tables: dict[str, list[tuple[Any, ...]]] = {}
    texts: list[tuple[Any, ...]] = []
    repeated: set[int] = set()
    for rkey, _, payload in logged:
        if payload is None:
            continue
        rows_of, words = orjson.loads(payload)
        for table, rows in rows_of.items():
            seen: set[int] = set()
            target = tables.setdefault(table, [])
            for row in rows:  # (n, pid, grp, *values)
                target.append((rkey, *row))
                if row[2] == 0 and row[1] in seen:  # grp 0: a plain (not composite) value
                    repeated.add(row[1])
                seen.add(row[1])
        if words is not None:
            texts.append((rkey, *words))
    for table, rows in tables.items():
        insert_rows(connection, INSERT_HEADS[table], rows)
    insert_rows(connection, "INSERT INTO idx_text (rowid, narrative, content)", texts)
    _mark_multiple(connection, repeated, multiple)
    for start in range(0, len(rkeys), MAX_ROWS_PER_STATEMENT):
        chunk = rkeys[start : start + MAX_ROWS_PER_STATEMENT]
        connection.execute(
            f"DELETE FROM index_pending WHERE rkey IN ({', '.join('?' * len(chunk))})", chunk
        )
    return len(logged)


def clear_index(connection: sqlite3.Connection, rkeys: Sequence[int]) -> None:
    """Remove every index row and the full text of the resources ``rkeys``."""
    for start in range(0, len(rkeys), MAX_ROWS_PER_STATEMENT):
        chunk = rkeys[start : start + MAX_ROWS_PER_STATEMENT]
        marks = ", ".join("?" * len(chunk))
        for table in INDEX_TABLE_NAMES:
            connection.execute(f"DELETE FROM {table} WHERE rkey IN ({marks})", chunk)
        connection.execute(f"DELETE FROM idx_text WHERE rowid IN ({marks})", chunk)


def _mark_multiple(
    connection: sqlite3.Connection, repeated: set[int], multiple: MultipleSets | None
) -> None:
    """Parameters seen with two values in one resource are marked ``multiple`` in the table,
    and added to ``multiple.new`` (to be trusted only once committed)."""
    new = repeated - (multiple.known | multiple.new) if multiple is not None else repeated
    if not new:
        return
    connection.executemany(
        "UPDATE search_param SET multiple = 1 WHERE pid = ?", [(p,) for p in sorted(new)]
    )
    if multiple is not None:
        multiple.new.update(new)


def _has_text(text: FullText | None) -> bool:
    return text is not None and bool(text.narrative or text.content)
