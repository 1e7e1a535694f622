"""Tables of the SQLite store.

``resource_version`` is the append-only history (every version, deletions included); its
``seq`` orders the system history and serves as the paging cursor, stable while new versions
arrive. ``resource_current`` points at each resource's newest version so a read is one
indexed lookup; its ``rkey`` is the resource's compact key, stable across versions, that
every search index row carries and that orders unsorted search results.

A parameter is single-valued until some resource holds two values of it (``param_multiple``
then lists it); until then ``date=ge2020&date=lt2021`` can be answered as one range over one
row per resource.

Search values live in a second file, the index file (``<database>-index``, attached to every
connection as ``ix``), one table per value type, as HAPI FHIR keeps them: each row names
its parameter by ``pid`` (an interned (resource type, code) pair, so one index range holds
exactly one parameter of one type) and its composite group ``grp``. A version's rows are
written in its own transaction to the index log (``index_pending`` in the main file: one row
per resource, the newest version's rows, ``seq`` naming that version) and moved into the
index file in batches, before any search reads them (index_log.py). Why a file of its own:
SQLite lets one writer per file at a time, and moving the rows, a random B-tree insert
each, took a third of the write lock's time; in its own file it no longer holds up the
writes of resources (docs/benchmarks.md, "Search"). ``index_state`` says which version of
each resource the index file holds, so a logged row is pending exactly when its ``seq`` is
newer. The tables are clustered by (rkey, n), ``n`` numbering a resource's rows: a new
resource's rows append to the end of each table and an update deletes one contiguous range,
so each row costs one secondary-index insert (a rowid table with a separate owner index
cost more per write). Each table is indexed for the lookups its parameter type needs
(``EXPLAIN QUERY PLAN`` checks in tests/unit/test_sqlite_plans.py).
"""

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 10
UPGRADABLE_FROM = {
    "5": "the index log (index_pending, index_eager) and resource claims were added",
    "6": "resource claims (resource_claim) were added",
    "7": "the search index moved to a file of its own",
    "8": "every resource claims its identifiers (claims.py)",
    "9": "a logged row may leave its entries to be computed when applied (index_log.py)",
}
"""Older schema versions this one opens as they are: the statements below add what they
lack. Claims are derived data, like index rows: ``rofecare reindex`` fills them for the
resources written before (the store says so when it opens such a database)."""
CLAIMS_SINCE = 7
INDEX_FILE_SINCE = 8
IDENTIFIER_CLAIMS_SINCE = 9
INDEX_SCHEMA = "ix"
"""The name every connection attaches the index file under."""
INDEX_SUFFIX = "-index"


def index_file(database: Path) -> Path:
    """The index file beside ``database``."""
    return database.with_name(database.name + INDEX_SUFFIX)


def connect(database: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to ``database`` with its index file attached, as the store's own are:
    for tools and tests that read the files directly."""
    mode = "ro" if read_only else "rwc"
    connection = sqlite3.connect(f"file:{database}?mode={mode}", uri=True)
    connection.execute(
        f"ATTACH DATABASE ? AS {INDEX_SCHEMA}", (f"file:{index_file(database)}?mode={mode}",)
    )
    return connection


NEGATIVE_INFINITY = -(2**62)  # an open Period start; every date sorts after it
POSITIVE_INFINITY = 2**62

INDEX_TABLES = {
    "token": ("idx_token", ("system", "code", "display")),
    "string": ("idx_string", ("norm", "exact")),
    "date": ("idx_date", ("low", "high")),
    "number": ("idx_number", ("value",)),
    "quantity": (
        "idx_quantity",
        ("value", "system", "code", "canonical_value", "canonical_code"),
    ),
    "reference": ("idx_reference", ("target_type", "target_id", "url")),
    "uri": ("idx_uri", ("uri",)),
}
"""Search type -> (table, value columns); every table also has pid, rkey and grp.
``index_pending`` has a column per table: that table's rows as JSON ``[[n, pid, grp,
*values], ...]`` (index_log.py)."""

STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS resource_version (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        last_updated_us INTEGER NOT NULL,
        method TEXT NOT NULL,
        body BLOB,
        UNIQUE (resource_type, id, version_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS resource_version_type_seq ON resource_version (resource_type, seq)",
    """
    CREATE TABLE IF NOT EXISTS resource_current (
        rkey INTEGER PRIMARY KEY,
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        last_updated_us INTEGER NOT NULL,
        UNIQUE (resource_type, id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS resource_current_updated "
    "ON resource_current (resource_type, last_updated_us)",
    """
    CREATE TABLE IF NOT EXISTS search_param (
        pid INTEGER PRIMARY KEY,
        resource_type TEXT NOT NULL,
        code TEXT NOT NULL,
        kind TEXT NOT NULL,
        multiple INTEGER NOT NULL DEFAULT 0,
        UNIQUE (resource_type, code)
    )
    """,
    "CREATE INDEX IF NOT EXISTS search_param_code ON search_param (code)",
    # Claims (storage/base.py, Claim): the keys each current resource holds, written in the
    # write's transaction (never logged: a claim is checked by the next write).
    """
    CREATE TABLE IF NOT EXISTS resource_claim (
        claim TEXT NOT NULL, rkey INTEGER NOT NULL,
        PRIMARY KEY (claim, rkey)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS resource_claim_rkey ON resource_claim (rkey)",
    """
    CREATE TABLE IF NOT EXISTS index_pending (
        rkey INTEGER PRIMARY KEY,
        resource_type TEXT NOT NULL,
        existed INTEGER NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0,
        idx_token TEXT, idx_string TEXT, idx_date TEXT, idx_number TEXT, idx_quantity TEXT,
        idx_reference TEXT, idx_uri TEXT,
        narrative TEXT, content TEXT,
        repeated TEXT,
        deferred INTEGER NOT NULL DEFAULT 0
    )
    """,
    # A search asks whether rows of its types wait (index_log.logged_among): without this
    # index each ask read the whole log, 4.6 % of the CPU of loading Synthea. It covers what
    # the ask and the apply read, so neither walks a logged row's JSON.
    "DROP INDEX IF EXISTS index_pending_type",
    "DROP INDEX IF EXISTS index_pending_state",
    "CREATE INDEX IF NOT EXISTS index_pending_work "
    "ON index_pending (resource_type, rkey, seq, existed, deferred)",
    """
    CREATE TABLE IF NOT EXISTS store_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)
"""The main file's tables: every version, the current pointers, claims and the index log."""

INDEX_STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS ix.idx_token (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        system TEXT NOT NULL, code TEXT NOT NULL, display TEXT,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ix.idx_token_value ON idx_token (pid, code, system)",
    """
    CREATE TABLE IF NOT EXISTS ix.idx_string (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        norm TEXT NOT NULL, exact TEXT NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ix.idx_string_value ON idx_string (pid, norm)",
    """
    CREATE TABLE IF NOT EXISTS ix.idx_date (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        low INTEGER NOT NULL, high INTEGER NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ix.idx_date_low ON idx_date (pid, low, high)",
    "CREATE INDEX IF NOT EXISTS ix.idx_date_high ON idx_date (pid, high, low)",
    """
    CREATE TABLE IF NOT EXISTS ix.idx_number (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ix.idx_number_value ON idx_number (pid, value)",
    """
    CREATE TABLE IF NOT EXISTS ix.idx_quantity (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        value REAL NOT NULL, system TEXT, code TEXT,
        canonical_value REAL, canonical_code TEXT,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ix.idx_quantity_value ON idx_quantity (pid, value)",
    "CREATE INDEX IF NOT EXISTS ix.idx_quantity_canonical "
    "ON idx_quantity (pid, canonical_code, canonical_value) WHERE canonical_code IS NOT NULL",
    """
    CREATE TABLE IF NOT EXISTS ix.idx_reference (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        target_type TEXT, target_id TEXT, url TEXT,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ix.idx_reference_target "
    "ON idx_reference (pid, target_id, target_type)",
    "CREATE INDEX IF NOT EXISTS ix.idx_reference_url ON idx_reference (pid, url) "
    "WHERE url IS NOT NULL",
    """
    CREATE TABLE IF NOT EXISTS ix.idx_uri (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        uri TEXT NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ix.idx_uri_value ON idx_uri (pid, uri)",
    """
    CREATE VIRTUAL TABLE IF NOT EXISTS ix.idx_text USING fts5 (
        narrative, content, tokenize = 'unicode61 remove_diacritics 2',
        detail = column, columnsize = 0
    )
    """,
    # The version of each resource whose rows the tables above hold (a deletion's too: its
    # rows are gone): a logged row with a newer seq is pending.
    "CREATE TABLE IF NOT EXISTS ix.index_state (rkey INTEGER PRIMARY KEY, seq INTEGER NOT NULL)",
    # Parameters some resource holds two plain values of (see the module docstring).
    "CREATE TABLE IF NOT EXISTS ix.param_multiple (pid INTEGER PRIMARY KEY)",
    """
    CREATE TABLE IF NOT EXISTS ix.index_eager (
        resource_type TEXT PRIMARY KEY,
        until REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ix.index_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)
"""The index file's tables (attached as ``ix``): search values, and what they stand for."""
