"""Bringing a database of an older schema (schema.UPGRADABLE_FROM) to the current one.

Schemas 5 to 7 kept the search index in the main file. Schema 8 keeps it in the index file
(schema.py says why); opening an older database moves the rows there, inside the opening
transaction, so the upgrade is all or nothing and needs no reindex. Schema 9 has every
resource claim its identifiers (claims.py); they are taken from the index, in the same
transaction. Schema 10 lets a logged row leave its entries to be computed when it is
applied (``index_pending.deferred``). Each step is written to run again harmlessly on a
database that has it already.
"""

from __future__ import annotations

import sqlite3

from fhir_server.storage.sqlite.claims import IDENTIFIER, SEPARATOR
from fhir_server.storage.sqlite.index_log import Computing, apply_logged, note_applied_seq
from fhir_server.storage.sqlite.index_rows import INDEX_TABLE_NAMES
from fhir_server.storage.sqlite.schema import INDEX_SCHEMA


def number_logged_versions(connection: sqlite3.Connection) -> None:
    """Give a schema 6-7 index log its ``seq`` column, before the statements index it. A
    logged row describes its resource's newest version, so that is the version it names."""
    columns = {row[1] for row in connection.execute("PRAGMA main.table_info(index_pending)")}
    if not columns or "seq" in columns:
        return
    connection.execute("ALTER TABLE index_pending ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    connection.execute(
        "UPDATE index_pending SET seq = coalesce("
        "(SELECT c.seq FROM resource_current c WHERE c.rkey = index_pending.rkey), 0)"
    )


def add_deferred_column(connection: sqlite3.Connection) -> None:
    """Give a schema 5-9 index log its ``deferred`` column, before the statements index it:
    none of its rows is deferred."""
    columns = {row[1] for row in connection.execute("PRAGMA main.table_info(index_pending)")}
    if columns and "deferred" not in columns:
        connection.execute(
            "ALTER TABLE index_pending ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0"
        )


def move_index_tables(connection: sqlite3.Connection) -> None:
    """Move a schema 5-7 database's index rows from its main file to the index file, and
    record which version of each resource they stand for (the current one, unless a newer
    row waits in the log, which then stays pending)."""
    held = connection.execute(
        "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'idx_token'"
    ).fetchone()
    if held is None:
        return
    for table in INDEX_TABLE_NAMES:
        connection.execute(f"INSERT INTO {INDEX_SCHEMA}.{table} SELECT * FROM main.{table}")
        connection.execute(f"DROP TABLE main.{table}")
    connection.execute(
        f"INSERT INTO {INDEX_SCHEMA}.idx_text (rowid, narrative, content) "
        "SELECT rowid, narrative, content FROM main.idx_text"
    )
    connection.execute("DROP TABLE main.idx_text")
    connection.execute(
        f"INSERT OR REPLACE INTO {INDEX_SCHEMA}.index_state (rkey, seq) "
        "SELECT c.rkey, c.seq FROM resource_current c "
        "WHERE NOT EXISTS (SELECT 1 FROM index_pending p WHERE p.rkey = c.rkey)"
    )
    connection.execute(
        f"INSERT OR IGNORE INTO {INDEX_SCHEMA}.param_multiple (pid) "
        "SELECT pid FROM search_param WHERE multiple = 1"
    )
    connection.execute("DROP TABLE IF EXISTS main.index_eager")
    row = connection.execute("SELECT MAX(seq) FROM resource_current").fetchone()
    note_applied_seq(connection, int(row[0] or 0))


def claim_identifiers(connection: sqlite3.Connection, computing: Computing | None) -> None:
    """Give every current resource of a schema 5-8 database the identifier keys its
    version holds, from its ``identifier`` index rows (the log applied first, so that none
    waits there). Resources the index does not know (an index file emptied at open) get
    theirs from ``rofecare reindex``, which the store asks for then."""
    apply_logged(connection, computing=computing)
    connection.execute(  # the keys of claims.identifier_key, built in SQL
        "INSERT OR IGNORE INTO resource_claim (claim, rkey) "
        "SELECT ?1 || ?2 || c.resource_type || ?2 || t.system || ?2 || t.code, c.rkey "
        f"FROM {INDEX_SCHEMA}.idx_token t "
        "JOIN search_param p ON p.pid = t.pid AND p.code = ?1 "
        "JOIN resource_current c ON c.rkey = t.rkey AND c.deleted = 0 "
        "WHERE t.system <> ''",
        (IDENTIFIER, SEPARATOR),
    )
