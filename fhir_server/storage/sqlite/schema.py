"""Tables of the SQLite store.

``resource_version`` is the append-only history (every version, deletions included); its
``seq`` orders the system history and serves as the paging cursor, stable while new versions
arrive. ``resource_current`` points at each resource's newest version so a read is one
indexed lookup; its ``rkey`` is the resource's compact key, stable across versions, that
every search index row carries and that orders unsorted search results.

``search_param.multiple`` turns 1 once some resource holds two values of the parameter;
until then a parameter is single-valued, and ``date=ge2020&date=lt2021`` can be answered
as one range over one row per resource.

Search values live in one table per value type, as HAPI FHIR keeps them: each row names
its parameter by ``pid`` (an interned (resource type, code) pair, so one index range holds
exactly one parameter of one type) and its composite group ``grp``. A version's rows are
written in its own transaction to the index log (``index_pending``: one row per resource,
the newest version's rows) and moved into these tables in batches, before any search reads
them (index_log.py). The tables are clustered by (rkey, n),
``n`` numbering a resource's rows: a new resource's rows append to the end of each table
and an update deletes one contiguous range, so each row costs one secondary-index insert
(a rowid table with a separate owner index cost more per write). Each table is indexed for
the lookups its parameter type needs (``EXPLAIN QUERY PLAN`` checks in
tests/unit/test_sqlite_plans.py).
"""

SCHEMA_VERSION = 7
UPGRADABLE_FROM = {
    "5": "the index log (index_pending, index_eager) and resource claims were added",
    "6": "resource claims (resource_claim) were added",
}
"""Older schema versions this one opens as they are: the statements below add what they
lack. Claims are derived data, like index rows: ``rofecare reindex`` fills them for the
resources written before (the store says so when it opens such a database)."""
CLAIMS_SINCE = 7
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
    """
    CREATE TABLE IF NOT EXISTS idx_token (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        system TEXT NOT NULL, code TEXT NOT NULL, display TEXT,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idx_token_value ON idx_token (pid, code, system)",
    """
    CREATE TABLE IF NOT EXISTS idx_string (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        norm TEXT NOT NULL, exact TEXT NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idx_string_value ON idx_string (pid, norm)",
    """
    CREATE TABLE IF NOT EXISTS idx_date (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        low INTEGER NOT NULL, high INTEGER NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idx_date_low ON idx_date (pid, low, high)",
    "CREATE INDEX IF NOT EXISTS idx_date_high ON idx_date (pid, high, low)",
    """
    CREATE TABLE IF NOT EXISTS idx_number (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idx_number_value ON idx_number (pid, value)",
    """
    CREATE TABLE IF NOT EXISTS idx_quantity (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        value REAL NOT NULL, system TEXT, code TEXT,
        canonical_value REAL, canonical_code TEXT,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idx_quantity_value ON idx_quantity (pid, value)",
    "CREATE INDEX IF NOT EXISTS idx_quantity_canonical "
    "ON idx_quantity (pid, canonical_code, canonical_value) WHERE canonical_code IS NOT NULL",
    """
    CREATE TABLE IF NOT EXISTS idx_reference (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        target_type TEXT, target_id TEXT, url TEXT,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idx_reference_target "
    "ON idx_reference (pid, target_id, target_type)",
    "CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (pid, url) "
    "WHERE url IS NOT NULL",
    """
    CREATE TABLE IF NOT EXISTS idx_uri (
        rkey INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL, grp INTEGER NOT NULL,
        uri TEXT NOT NULL,
        PRIMARY KEY (rkey, n)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS idx_uri_value ON idx_uri (pid, uri)",
    """
    CREATE VIRTUAL TABLE IF NOT EXISTS idx_text USING fts5 (
        narrative, content, tokenize = 'unicode61 remove_diacritics 2',
        detail = column, columnsize = 0
    )
    """,
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
        idx_token TEXT, idx_string TEXT, idx_date TEXT, idx_number TEXT, idx_quantity TEXT,
        idx_reference TEXT, idx_uri TEXT,
        narrative TEXT, content TEXT,
        repeated TEXT
    )
    """,
    # A search asks whether rows of its types wait (index_log.logged_among): without this
    # index each ask read the whole log, 4.6 % of the CPU of loading Synthea.
    "CREATE INDEX IF NOT EXISTS index_pending_type ON index_pending (resource_type, rkey)",
    """
    CREATE TABLE IF NOT EXISTS index_eager (
        resource_type TEXT PRIMARY KEY,
        until REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS store_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)
