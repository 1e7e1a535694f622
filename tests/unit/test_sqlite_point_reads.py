"""A point read that meets a lock falls back to the reader pool (SQLite backend only).

Under WAL a reader meets SQLITE_BUSY only while another process recovers the WAL, which a
test cannot provoke reliably; a stand-in connection that answers "database is locked"
(named as such) plays that moment.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhir_server.storage.base import WriteRecord
from fhir_server.storage.sqlite import SqliteStore


class LockedConnectionStandIn:
    """Stands in for the event loop's connection at the moment the database is locked."""

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, *args: Any) -> Any:
        self.calls += 1
        raise sqlite3.OperationalError("database is locked")


async def test_a_locked_point_read_is_retried_on_the_reader_pool(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "locked.sqlite3")
    await store.open()
    try:
        record = WriteRecord("Patient", "a", 1, 0, datetime.now(UTC), "POST", b'{"id":"a"}')
        await store.write([record])
        stand_in = LockedConnectionStandIn()
        store._loop_local = stand_in  # type: ignore[assignment]
        found = await store.read("Patient", "a")
        assert found is not None and found.version_id == 1
        assert (await store.vread("Patient", "a", 1)) is not None
        assert stand_in.calls == 2
    finally:
        await store.close()
