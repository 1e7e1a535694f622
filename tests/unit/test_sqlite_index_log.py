"""The SQLite index log: writes log their index rows, and no search ever misses them.

The store's timers are lengthened here so that rows stay in the log until the behaviour
under test applies them; each test then reads ``index_pending`` itself (a second,
read-only connection to the same file) to show where the rows are.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.plan import (
    Chain,
    Has,
    Include,
    SearchPlan,
    StringMatch,
    TokenMatch,
    indexed_types,
)
from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite import store as store_module
from fhir_server.storage.sqlite.index_rows import INDEX_TABLE_NAMES
from tests.contract.test_search_contract import BASE_URL
from tests.contract.test_search_contract import Stack as ContractStack


class Stack(ContractStack):
    """The search contract's write and search services, over one SQLite file."""

    def __init__(self, store: SqliteStore, path: Path) -> None:
        super().__init__(store)
        self.store = store
        self.path = path

    async def ids(self, resource_type: str, query: list[tuple[str, str]]) -> list[str]:
        result = await self.search.search((resource_type,), query, strict=True, base_url=BASE_URL)
        return sorted(version.resource_id for version in result.page.matches)

    def logged(self) -> list[tuple[str, int]]:
        """(resource type, rkey) of every row waiting in the log."""
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as connection:
            return connection.execute(
                "SELECT resource_type, rkey FROM index_pending ORDER BY rkey"
            ).fetchall()


@pytest.fixture
def slow_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timed or size-triggered apply during a test (it would race the assertions), and
    no eager apply after a search unless a test asks for it."""
    monkeypatch.setattr(store_module, "APPLY_DELAY_SECONDS", 3600.0)
    monkeypatch.setattr(store_module, "APPLY_AT", 10**9)
    monkeypatch.setattr(store_module, "EAGER_SECONDS", 0.0)


@pytest.fixture
async def stack(tmp_path: Path, slow_apply: None) -> AsyncIterator[Stack]:
    path = tmp_path / "log.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        yield Stack(store, path)
    finally:
        await store.close()


def logged_types(stack: Stack) -> set[str]:
    return {name for name, _ in stack.logged()}


def patient(resource_id: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": resource_id, "name": [{"family": family}]}


def observation(resource_id: str, subject: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
    }


async def test_a_write_is_logged_and_the_next_search_finds_it(stack: Stack) -> None:
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    assert "Patient" in logged_types(stack)
    assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]
    assert "Patient" not in logged_types(stack)


async def test_rows_built_on_the_event_loop_equal_the_writers_own(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Patient's parameters have no id yet, so the writer builds its log row; the
    second's are known, so the event loop builds it before queuing the write. Same data,
    same rows (the full text differs: it holds each one's lastUpdated)."""
    built: list[bool] = []
    real = store_module.log_row

    def spy(*arguments: Any) -> Any:
        row = real(*arguments)
        built.append(row is not None)
        return row

    monkeypatch.setattr(store_module, "log_row", spy)
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    await stack.resources.update("Patient", "p2", patient("p2", "Okafor"))
    assert built[0] is False  # Patient's parameters were new: left to the writer
    assert built[-1] is True  # known by then: built on the event loop
    columns = "idx_token, idx_string, idx_date, narrative, repeated"
    with sqlite3.connect(f"file:{stack.path}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            f"SELECT {columns} FROM index_pending WHERE resource_type = 'Patient' ORDER BY rkey"
        ).fetchall()
    assert len(rows) == 2 and rows[0] == rows[1]
    assert '"okafor","Okafor"' in rows[0][1]
    assert await stack.ids("Patient", [("family", "okafor")]) == ["p1", "p2"]


async def test_an_update_and_a_delete_replace_the_rows_of_the_version_before(
    stack: Stack,
) -> None:
    await stack.resources.update("Patient", "p1", patient("p1", "Smith"))
    assert await stack.ids("Patient", [("family", "smith")]) == ["p1"]  # applied
    await stack.resources.update("Patient", "p1", patient("p1", "Jones"))
    assert "Patient" in logged_types(stack)  # the old rows are still in the index tables
    assert await stack.ids("Patient", [("family", "smith")]) == []
    assert await stack.ids("Patient", [("family", "jones")]) == ["p1"]
    await stack.resources.delete("Patient", "p1")
    assert "Patient" in logged_types(stack)
    assert await stack.ids("Patient", [("family", "jones")]) == []
    assert await stack.ids("Patient", [("_id", "p1")]) == []


async def test_two_versions_logged_before_an_apply_leave_only_the_newest(stack: Stack) -> None:
    await stack.resources.update("Patient", "p1", patient("p1", "Smith"))
    await stack.resources.update("Patient", "p1", patient("p1", "Jones"))
    patients = [rkey for name, rkey in stack.logged() if name == "Patient"]
    assert len(patients) == 1  # one row per resource: the newest version's
    assert await stack.ids("Patient", [("family", "smith")]) == []
    assert await stack.ids("Patient", [("family", "jones")]) == ["p1"]


async def test_a_search_applies_only_the_types_it_reads(stack: Stack) -> None:
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    await stack.resources.update("Observation", "o1", observation("o1", "p1", "8867-4"))
    assert await stack.ids("Observation", [("code", "http://loinc.org|8867-4")]) == ["o1"]
    waiting = logged_types(stack)
    assert "Observation" not in waiting
    assert "Patient" in waiting  # not read by that search: still in the log
    chained = [("subject:Patient.family", "okafor")]
    assert await stack.ids("Observation", chained) == ["o1"]
    assert "Patient" not in logged_types(stack)


async def test_includes_chains_and_reverse_chains_see_logged_rows(stack: Stack) -> None:
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    await stack.resources.update("Observation", "o1", observation("o1", "p1", "8867-4"))
    has = [("_has:Observation:subject:code", "8867-4")]
    assert await stack.ids("Patient", has) == ["p1"]
    await stack.resources.update("Observation", "o2", observation("o2", "p1", "1234-5"))
    result = await stack.search.search(
        ("Patient",),
        [("_id", "p1"), ("_revinclude", "Observation:subject")],
        strict=True,
        base_url=BASE_URL,
    )
    assert sorted(v.resource_id for v in result.page.included) == ["o1", "o2"]


async def test_a_searched_type_applies_its_rows_at_each_commit_for_a_while(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "EAGER_SECONDS", 3600.0)
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]  # had to apply
    await stack.resources.update("Patient", "p2", patient("p2", "Mensah"))
    await stack.resources.update("Observation", "o1", observation("o1", "p1", "8867-4"))
    waiting = logged_types(stack)
    assert "Patient" not in waiting  # written while "eager": applied in its own commit
    assert "Observation" in waiting  # never searched: logged


async def test_a_search_in_one_process_makes_the_writes_of_another_apply_at_commit(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores on one file stand for two ``rofecare serve`` workers: the first one's
    search had to wait for Patient rows, so the second one's Patient writes apply theirs.
    (A writer reads the shared table at most every EAGER_REREAD_SECONDS: 0 here, so that
    the second write cannot come within that time of the first.)"""
    monkeypatch.setattr(store_module, "EAGER_SECONDS", 3600.0)
    monkeypatch.setattr(store_module, "EAGER_REREAD_SECONDS", 0.0)
    other = SqliteStore(stack.path)
    await other.open()
    try:
        writer = Stack(other, stack.path)
        await writer.resources.update("Patient", "p1", patient("p1", "Okafor"))
        assert "Patient" in logged_types(stack)
        assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]  # applies
        await writer.resources.update("Patient", "p2", patient("p2", "Mensah"))
        assert "Patient" not in logged_types(stack)
        assert await stack.ids("Patient", [("family", "mensah")]) == ["p2"]
    finally:
        await other.close()


async def test_the_search_falls_back_to_the_writer_when_rows_keep_arriving(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of its types logged after every apply (a stand-in for a busy writer in another
    process): the search then runs in the writer's transaction, after applying them."""
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    monkeypatch.setattr(store_module, "logged_among", lambda connection, types: True)
    assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]
    assert "Patient" not in logged_types(stack)


async def test_a_conditional_create_sees_a_logged_match(stack: Stack) -> None:
    first = patient("p1", "Okafor")
    first["identifier"] = [{"system": "urn:mrn", "value": "42"}]
    await stack.resources.update("Patient", "p1", first)
    assert "Patient" in logged_types(stack)
    second = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]}
    outcome = await stack.resources.create("Patient", second, if_none_exist="identifier=urn:mrn|42")
    assert not outcome.created  # matched the logged Patient
    assert outcome.version.resource_id == "p1"
    assert await stack.ids("Patient", [("identifier", "urn:mrn|42")]) == ["p1"]


async def test_rows_logged_before_a_crash_are_applied_at_the_next_start(
    tmp_path: Path, slow_apply: None
) -> None:
    path = tmp_path / "crash.sqlite3"
    store = SqliteStore(path)
    await store.open()
    stack = Stack(store, path)
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    assert "Patient" in logged_types(stack)
    # A crash: the process ends without close() (which would apply the log).
    store._writer.shutdown(wait=True)
    store._readers.shutdown(wait=True)
    store._write_lock.close()
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert Stack(reopened, path).logged() == []
        assert await Stack(reopened, path).ids("Patient", [("family", "okafor")]) == ["p1"]
    finally:
        await reopened.close()


async def test_the_log_is_applied_in_the_background_without_any_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "APPLY_DELAY_SECONDS", 0.05)
    path = tmp_path / "background.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        stack = Stack(store, path)
        await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
        await settled(lambda: not stack.logged())
        assert stack.logged() == []
    finally:
        await store.close()


async def settled(done: Callable[[], bool]) -> None:
    """Wait for the background apply (10 s at most): the assertion after says what to see."""
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0.02)


async def test_a_schema_5_database_opens_and_gains_the_log(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE index_pending")
        connection.execute("DROP TABLE index_eager")
        connection.execute("UPDATE store_meta SET value = '5' WHERE key = 'schema_version'")
    upgraded = SqliteStore(path)
    await upgraded.open()
    try:
        stack = Stack(upgraded, path)
        await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
        assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]
    finally:
        await upgraded.close()
    with sqlite3.connect(path) as connection:
        version = connection.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert version == (str(store_module.SCHEMA_VERSION),)


def test_a_plan_reads_the_index_of_its_types_chains_and_includes() -> None:
    plan = SearchPlan(
        ("Observation",),
        (
            (TokenMatch("code", None, "8867-4"),),
            (Chain("subject", "Patient", ((StringMatch("name", "prefix", "ok"),),)),),
            (Has("Provenance", "target", ((TokenMatch("agent-type", None, "x"),),)),),
        ),
        includes=(Include("Encounter", "subject", None, reverse=True, iterate=False),),
    )
    assert indexed_types(plan) == {"Observation", "Patient", "Provenance", "Encounter"}
    assert indexed_types(SearchPlan((), ())) is None  # a search of every type
    iterate = Include("Observation", "subject", None, reverse=False, iterate=True)
    assert indexed_types(SearchPlan(("Observation",), (), includes=(iterate,))) is None


def logged_rows(stack: Stack) -> int:
    """The index rows waiting in the log."""
    counts = " + ".join(f"coalesce(json_array_length({table}), 0)" for table in INDEX_TABLE_NAMES)
    with sqlite3.connect(f"file:{stack.path}?mode=ro", uri=True) as connection:
        total: int = connection.execute(f"SELECT sum({counts}) FROM index_pending").fetchone()[0]
    return total


def audit_event(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "recorded": "2026-12-03T10:00:00Z",
        "agent": [{"who": {"display": "Dr Smith"}, "requestor": True}],
        "source": {"observer": {"display": "Rofecare"}},
        "entity": [{"what": {"reference": f"Patient/{patient_id}"}}],
    }


async def test_audit_events_wait_in_the_log_until_many_and_searches_still_see_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timed apply leaves AuditEvent rows in the log (applied in bulk, later); a search
    of AuditEvent applies them first, as for any type; enough of them apply on their own."""
    monkeypatch.setattr(store_module, "APPLY_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(store_module, "EAGER_SECONDS", 0.0)
    path = tmp_path / "bulk.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        stack = Stack(store, path)
        first = (await stack.resources.create("AuditEvent", audit_event("p1"))).version
        monkeypatch.setattr(store_module, "BULK_APPLY_ROWS", 3 * logged_rows(stack))
        await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
        await settled(lambda: "Patient" not in logged_types(stack))
        assert logged_types(stack) == {"AuditEvent"}  # the Patient's went, not the event's
        await asyncio.sleep(0.2)  # several timer periods: it stays
        assert logged_types(stack) == {"AuditEvent"}

        found = await stack.ids("AuditEvent", [("entity", "Patient/p1")])
        assert found == [first.resource_id]
        assert stack.logged() == []

        for n in range(3):  # 3 events' rows reach BULK_APPLY_ROWS: applied without a search
            await stack.resources.create("AuditEvent", audit_event(f"p{n}"))
        await settled(lambda: not stack.logged())
        assert stack.logged() == []
    finally:
        await store.close()
