"""Tables of the SQLite store.

``resource_version`` is the append-only history (every version, deletions included); its
``seq`` orders the system history and serves as the paging cursor, stable while new versions
arrive. ``resource_current`` points at each resource's newest version so a read is one
primary-key lookup. Search index tables hold typed values, replaced with each version.
"""

SCHEMA_VERSION = 1

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
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        PRIMARY KEY (resource_type, id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS token_index (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        param TEXT NOT NULL,
        system TEXT NOT NULL,
        code TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS token_index_value "
    "ON token_index (resource_type, param, code, system)",
    "CREATE INDEX IF NOT EXISTS token_index_owner ON token_index (resource_type, id)",
    """
    CREATE TABLE IF NOT EXISTS store_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)
