"""Lookups (a conditional create's, a rule's: a few matches by identifier or id) run on the
event loop's own connection, and anything that stops them there sends them the usual way
(SQLite backend only). The answer is the same either way; these tests check where it came
from, through a recording wrapper around the loop's real connection."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.search.plan import SearchPlan, TokenMatch
from fhir_server.search.values import TokenEntry
from fhir_server.storage.base import WriteRecord
from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite import store as store_module
from tests.unit.test_sqlite_point_reads import LockedConnectionStandIn


class Recording:
    """The loop's real connection, recording the statements run through it."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return self.connection.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


def patient(resource_id: str, mrn: str) -> WriteRecord:
    body = orjson.dumps({"resourceType": "Patient", "id": resource_id})
    entry = TokenEntry("identifier", "urn:mrn", mrn)
    return WriteRecord("Patient", resource_id, 1, 0, datetime.now(UTC), "POST", body, (entry,))


def lookup(mrn: str, count: int = 2) -> SearchPlan:
    return SearchPlan(
        ("Patient",), ((TokenMatch("identifier", "urn:mrn", mrn),),), count=count, total="none"
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "lookups.sqlite3")
    await store.open()
    await store.write([patient("a", "1")])
    await store.search(lookup("1", count=50))  # applies the log: nothing waits
    try:
        yield store
    finally:
        await store.close()


def record_loop(store: SqliteStore) -> Recording:
    recording = Recording(store._loop_connection())
    store._loop_local = recording  # type: ignore[assignment]
    return recording


async def found(store: SqliteStore, plan: SearchPlan) -> list[str]:
    return [version.resource_id for version in (await store.search(plan)).matches]


async def test_a_lookup_runs_on_the_loop_connection(store: SqliteStore) -> None:
    loop = record_loop(store)

    assert await found(store, lookup("1")) == ["a"]

    assert loop.statements[0] == "BEGIN" and len(loop.statements) > 2
    assert not loop.connection.in_transaction


async def test_a_search_that_is_no_lookup_runs_on_a_reader(store: SqliteStore) -> None:
    loop = record_loop(store)
    everything = SearchPlan(("Patient",), ())
    many = lookup("1", count=store_module.LOOKUP_COUNT + 1)
    counted = SearchPlan(("Patient",), lookup("1").where, count=2, total="accurate")

    for plan in (everything, many, counted):
        assert await found(store, plan) == ["a"]

    assert loop.statements == []


async def test_rows_waiting_in_the_log_send_a_lookup_the_usual_way(store: SqliteStore) -> None:
    await store.write([patient("b", "2")])  # its rows wait in the index log
    loop = record_loop(store)

    assert await found(store, lookup("2")) == ["b"]

    assert loop.statements[0] == "BEGIN"  # it looked, saw the log, and let a reader apply it
    assert not loop.connection.in_transaction


async def test_a_lookup_over_its_budget_finishes_on_a_reader(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "LOOKUP_STEPS", 0)  # interrupted at the first check
    loop = record_loop(store)

    assert await found(store, lookup("1")) == ["a"]

    assert loop.statements[0] == "BEGIN"
    assert not loop.connection.in_transaction
    assert (await store.read("Patient", "a")) is not None  # the loop connection still works


async def test_a_locked_loop_connection_sends_a_lookup_to_a_reader(store: SqliteStore) -> None:
    stand_in = LockedConnectionStandIn()
    store._loop_local = stand_in  # type: ignore[assignment]

    assert await found(store, lookup("1")) == ["a"]

    assert stand_in.calls >= 1
