"""Rows in and out of SQLite: ``resource_version`` rows as ``StoredVersion`` objects, and
multi-row inserts."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from fhir_server.model.instant import from_micros
from fhir_server.storage.base import Method, StoredVersion

# Rows per multi-row statement: far below SQLite's 32,766 parameters at any table's width.
MAX_ROWS_PER_STATEMENT = 500
VERSION_COLUMNS = "v.resource_type, v.id, v.version_id, v.last_updated_us, v.method, v.body"


def version_of(row: tuple[Any, ...] | Any) -> StoredVersion:
    method: Method = row[4]
    return StoredVersion(
        resource_type=row[0],
        resource_id=row[1],
        version_id=row[2],
        last_updated=from_micros(row[3]),
        method=method,
        body=row[5],
    )


def insert_rows(
    connection: sqlite3.Connection,
    head: str,
    rows: Sequence[Sequence[Any]],
    tail: str = "",
) -> None:
    """``head VALUES (...), (...) tail``: one statement, so one GIL round trip, per chunk
    (see batch.py on why statements are few)."""
    if not rows:
        return
    row = "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        chunk = rows[start : start + MAX_ROWS_PER_STATEMENT]
        connection.execute(
            f"{head} VALUES {', '.join([row] * len(chunk))}{tail}",
            [value for values in chunk for value in values],
        )
