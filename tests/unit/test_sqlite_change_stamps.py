"""Change stamps (storage/sqlite/change_stamps.py): whether a SearchParameter or a
StructureDefinition was written since the last look, told without a query when nothing was.

Two stores on one file stand for two ``rofecare serve`` workers; ``queries`` counts the
``MAX(seq)`` questions a store puts to SQLite.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite import store as store_module
from fhir_server.storage.sqlite.change_stamps import ChangeStamps
from fhir_server.storage.sqlite.schema import connect
from tests.unit.test_sqlite_index_log import Stack, opened, slow_apply, stack

__all__ = ["slow_apply", "stack"]  # fixtures used by name


def search_parameter() -> dict[str, Any]:
    code = f"marital{uuid.uuid4().hex[:8]}"
    return {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/SearchParameter/{code}",
        "name": code,
        "status": "active",
        "description": "Marital status",
        "code": code,
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.maritalStatus",
    }


def queries(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many latest-change queries ``store`` ran on its event loop so far."""
    count = 0
    original = store._loop_rows

    async def counted(sql: str, args: Any) -> list[Any]:
        nonlocal count
        if "MAX(seq)" in sql:
            count += 1
        return await original(sql, args)

    monkeypatch.setattr(store, "_loop_rows", counted)
    return lambda: count


def stored_latest(path: Path) -> int:
    with closing(connect(path, read_only=True)) as connection:
        row = connection.execute(
            "SELECT MAX(seq) FROM resource_version WHERE resource_type = 'SearchParameter'"
        ).fetchone()
    return int(row[0] or 0)


async def test_nothing_written_since_the_last_look_is_told_without_a_query(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.resources.create("SearchParameter", search_parameter())
    async with opened(stack.path) as other:
        asked = queries(other, monkeypatch)
        first = await other.latest_change("SearchParameter")  # its first look: a query
        assert first == stored_latest(stack.path)
        assert asked() == 1
        await stack.resources.create("Patient", {"resourceType": "Patient"})  # no definition
        assert await other.latest_change("SearchParameter") == first
        assert await other.latest_change("SearchParameter") == first
        assert asked() == 1
        # A type without a stamp is asked in SQL every time.
        await other.latest_change("Patient")
        await other.latest_change("Patient")
        assert asked() == 3


async def test_a_definition_another_process_writes_is_seen_at_the_next_look(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await stack.store.latest_change("SearchParameter")
    async with opened(stack.path) as other:
        await Stack(other, stack.path).resources.create("SearchParameter", search_parameter())
    after = await stack.store.latest_change("SearchParameter")
    assert after > before
    assert after == stored_latest(stack.path)


async def test_a_stamp_its_write_has_not_committed_yet_is_not_trusted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stamped inside the writer's transaction, before its commit: until a query shows the
    stamped version, every look asks SQL."""
    await stack.resources.create("SearchParameter", search_parameter())
    committed = await stack.store.latest_change("SearchParameter")
    ChangeStamps(stack.path).write("SearchParameter", committed + 5)  # a commit in flight
    asked = queries(stack.store, monkeypatch)
    assert await stack.store.latest_change("SearchParameter") == committed
    assert await stack.store.latest_change("SearchParameter") == committed
    assert asked() == 2


async def test_a_slot_read_mid_write_is_not_trusted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.resources.create("SearchParameter", search_parameter())
    committed = await stack.store.latest_change("SearchParameter")
    changes = stack.path.with_name(stack.path.name + "-changes")
    with changes.open("r+b") as file:
        file.write(f"{committed:020d} {committed + 1:020d}\n".encode())  # two copies differ
    assert ChangeStamps(stack.path).read("SearchParameter") is None
    asked = queries(stack.store, monkeypatch)
    assert await stack.store.latest_change("SearchParameter") == committed
    assert await stack.store.latest_change("SearchParameter") == committed
    assert asked() == 2


async def test_a_commit_that_failed_after_stamping_stamps_what_is_committed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.resources.create("SearchParameter", search_parameter())
    committed = stored_latest(stack.path)
    original = store_module._committed

    stamped: list[int | None] = []

    def failing(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any]) -> Any:
        def then_fail(inner: sqlite3.Connection) -> Any:
            result = work(inner)
            stamp = ChangeStamps(stack.path).read("SearchParameter")
            if stamp == committed:  # another transaction (the indexer's): let it be
                return result
            stamped.append(stamp)
            raise sqlite3.OperationalError("disk I/O error")  # the SearchParameter's

        return original(connection, then_fail)

    monkeypatch.setattr(store_module, "_committed", failing)
    with pytest.raises(Exception, match="busy or unavailable"):
        await stack.resources.create("SearchParameter", search_parameter())
    monkeypatch.setattr(store_module, "_committed", original)
    assert len(stamped) == 1 and stamped[0] is not None and stamped[0] > committed
    assert stored_latest(stack.path) == committed
    assert ChangeStamps(stack.path).read("SearchParameter") == committed
