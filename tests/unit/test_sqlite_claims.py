"""SQLite's own side of claims (storage/base.py, Claim; storage/sqlite/claims.py): what the
store contract cannot see from outside."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import orjson

from fhir_server.storage.base import Claim, WriteRecord
from fhir_server.storage.sqlite.store import SqliteStore

T0 = datetime(2026, 12, 4, tzinfo=UTC)


def patient(resource_id: str, version: int, *keys: str, deleted: bool = False) -> WriteRecord:
    body = None if deleted else orjson.dumps({"resourceType": "Patient", "id": resource_id})
    return WriteRecord(
        resource_type="Patient",
        resource_id=resource_id,
        version_id=version,
        previous_version=version - 1,
        last_updated=T0,
        method="DELETE" if deleted else "PUT",
        body=body,
        claims=() if deleted else keys,
        enforced=tuple(Claim(key, "rofecare-1998", "taken") for key in keys),
    )


async def test_a_deletion_leaves_no_claim_row_and_check_finds_stray_ones(tmp_path: Path) -> None:
    path = tmp_path / "claims.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.write([patient("a", 1, "mrn:1", "mrn:2")])
        await store.write([patient("b", 1, "mrn:3")])
        await store.write([patient("a", 2, deleted=True)])
        with sqlite3.connect(path) as connection:
            rows = connection.execute("SELECT claim FROM resource_claim ORDER BY claim").fetchall()
            assert rows == [("mrn:3",)]
            assert await store.check() == []
            # What only a bug or a hand-edited file would leave: claims of no current resource.
            deleted_key = connection.execute(
                "SELECT rkey FROM resource_current WHERE id = 'a'"
            ).fetchone()[0]
            connection.execute(
                "INSERT INTO resource_claim (claim, rkey) VALUES ('mrn:1', ?), ('mrn:9', 999)",
                (deleted_key,),
            )
        problems = await store.check()
        assert problems == [
            "claim 'mrn:1' is held by Patient/a, which is not a current resource",
            "claim 'mrn:9' is held by resource key 999, which is not a current resource",
        ]
    finally:
        await store.close()
