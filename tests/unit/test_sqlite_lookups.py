"""Searches run on the event loop's own connection, and anything that stops them there (rows
waiting in the index log, a lock, the step budget) sends them to a reader thread (SQLite
backend only). The answer is the same either way; these tests check where it came from,
through a recording wrapper around the loop's real connection."""

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


async def test_every_search_within_the_budget_runs_on_the_loop(store: SqliteStore) -> None:
    everything = SearchPlan(("Patient",), ())
    many = lookup("1", count=500)
    counted = SearchPlan(("Patient",), lookup("1").where, count=2, total="accurate")

    for plan in (everything, many, counted):
        loop = record_loop(store)
        assert await found(store, plan) == ["a"]
        assert loop.statements[0] == "BEGIN" and len(loop.statements) > 2
        assert not loop.connection.in_transaction


async def test_rows_waiting_in_the_log_send_a_search_the_usual_way(store: SqliteStore) -> None:
    await store.write([patient("b", "2")])  # its rows wait in the index log
    loop = record_loop(store)

    assert await found(store, lookup("2")) == ["b"]

    assert loop.statements[0] == "BEGIN"  # it looked, saw the log, and let a reader apply it
    assert not loop.connection.in_transaction


async def test_a_search_over_its_budget_finishes_on_a_reader(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.write([patient(f"p{number}", f"m{number}") for number in range(300)])
    await store.search(lookup("m1", count=50))  # applies the log: nothing waits
    on_reader = count_reader_runs(store, monkeypatch)
    everything = SearchPlan(("Patient",), (), count=500, total="accurate")
    assert len(await found(store, everything)) == 301  # well within the budget
    assert on_reader == []

    monkeypatch.setattr(store_module, "LOOP_SEARCH_STEPS", 0)  # over it at the first check
    loop = record_loop(store)

    assert len(await found(store, everything)) == 301

    assert on_reader == [1]
    assert loop.statements[0] == "BEGIN"
    assert not loop.connection.in_transaction
    assert (await store.read("Patient", "a")) is not None  # the loop connection still works


def count_reader_runs(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets a 1 for every job the store sends to a reader thread."""
    runs: list[int] = []
    real = store._on_reader

    async def counted(job: Any) -> Any:
        runs.append(1)
        return await real(job)

    monkeypatch.setattr(store, "_on_reader", counted)
    return runs


async def test_a_locked_loop_connection_sends_a_search_to_a_reader(store: SqliteStore) -> None:
    stand_in = LockedConnectionStandIn()
    store._loop_local = stand_in  # type: ignore[assignment]

    assert await found(store, lookup("1")) == ["a"]

    assert stand_in.calls >= 1
