"""The SQLite index log: writes log their index rows, and no search ever misses them.

The store's timers are lengthened here so that rows stay in the log until the behaviour
under test applies them; each test then reads ``index_pending`` itself (a second,
read-only connection to the same file) to show where the rows are.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.definitions import load_definitions
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.model.resource import with_meta
from fhir_server.search.plan import (
    Chain,
    Has,
    Include,
    SearchPlan,
    StringMatch,
    TokenMatch,
    indexed_types,
)
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.reindex import reindex
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import WriteRecord
from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite import store as store_module
from fhir_server.storage.sqlite.index_log import PENDING, forget_applied
from fhir_server.storage.sqlite.index_rows import INDEX_TABLE_NAMES
from fhir_server.storage.sqlite.schema import connect, index_file
from fhir_server.storage.sqlite.write_lock import ProcessWriteLock
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
        """(resource type, rkey) of every row waiting in the log, not yet applied."""
        with closing(connect(self.path, read_only=True)) as connection:
            return connection.execute(
                f"SELECT resource_type, rkey FROM index_pending p WHERE {PENDING} ORDER BY rkey"
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


def with_entries(resource: dict[str, Any]) -> WriteRecord:
    """A new version of ``resource`` carrying its index entries, as a writer computing them
    itself gives it to the store."""
    definitions = load_definitions()
    index = SearchIndex(
        load_search_parameters(), definitions.is_resource_type, default_count=50, max_count=50
    )
    moment = now_utc()
    body = with_meta(resource, 1, to_instant(moment))
    entries, text = index.entries(body)
    return WriteRecord(
        resource_type=resource["resourceType"],
        resource_id=resource["id"],
        version_id=1,
        previous_version=0,
        last_updated=moment,
        method="PUT",
        body=orjson.dumps(body),
        entries=entries,
        full_text=text,
    )


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
    """A record written with its entries (not ``index_later``, as the service's are): the
    first Patient's parameters have no id yet, so the writer builds its log row; the
    second's are known, so the event loop builds it before queuing the write. Same data,
    same rows (the full text differs: it holds each one's lastUpdated)."""
    built: list[bool] = []
    real = store_module.log_row

    def spy(*arguments: Any) -> Any:
        row = real(*arguments)
        built.append(row is not None)
        return row

    monkeypatch.setattr(store_module, "log_row", spy)
    await stack.store.write([with_entries(patient("p1", "Okafor"))])
    await stack.store.write([with_entries(patient("p2", "Okafor"))])
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


async def test_a_searched_type_applies_its_rows_after_each_commit_for_a_while(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "EAGER_SECONDS", 3600.0)
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]  # had to apply
    await stack.resources.update("Patient", "p2", patient("p2", "Mensah"))
    await stack.resources.update("Observation", "o1", observation("o1", "p1", "8867-4"))
    # written while "eager": the indexer applies them right after the commit (the timed
    # apply, which would apply the Observation too, is an hour away)
    await settled(lambda: "Patient" not in logged_types(stack))
    waiting = logged_types(stack)
    assert "Patient" not in waiting
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
        await settled(lambda: "Patient" not in logged_types(stack))
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


def crash(store: SqliteStore) -> None:
    """Stop ``store`` as a killed process would: its threads gone, nothing closed."""
    store._writer.shutdown(wait=True)
    store._readers.shutdown(wait=True)
    store._write_lock.close()


async def test_rows_logged_before_a_crash_are_applied_at_the_next_start(
    tmp_path: Path, slow_apply: None
) -> None:
    path = tmp_path / "crash.sqlite3"
    store = SqliteStore(path)
    await store.open()
    stack = Stack(store, path)
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    assert "Patient" in logged_types(stack)
    crash(store)  # the process ends without close(), which would apply the log
    reopened = SqliteStore(path)
    Stack(reopened, path)  # as the server's core: its indexing is given before the store opens
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


def as_older_schema(path: Path, version: int) -> None:
    """Rewrite a closed store's files as schema ``version`` (5 or 7) left them: the index
    tables in the main file, no index file; in 5, no index log either."""
    index = index_file(path)
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("ATTACH DATABASE ? AS ix", (str(index),))
        for table in INDEX_TABLE_NAMES:
            connection.execute(f"CREATE TABLE main.{table} AS SELECT * FROM ix.{table}")
        connection.execute(
            "CREATE VIRTUAL TABLE main.idx_text USING fts5 (narrative, content, "
            "tokenize = 'unicode61 remove_diacritics 2', detail = column, columnsize = 0)"
        )
        connection.execute(
            "INSERT INTO main.idx_text (rowid, narrative, content) "
            "SELECT rowid, narrative, content FROM ix.idx_text"
        )
        connection.execute(
            "UPDATE search_param SET multiple = 1 WHERE pid IN (SELECT pid FROM ix.param_multiple)"
        )
        connection.execute("DROP INDEX index_pending_work")
        connection.execute("ALTER TABLE index_pending DROP COLUMN deferred")
        connection.execute("ALTER TABLE index_pending DROP COLUMN seq")
        connection.execute("CREATE INDEX index_pending_type ON index_pending (resource_type, rkey)")
        connection.execute(
            "CREATE TABLE index_eager (resource_type TEXT PRIMARY KEY, until REAL NOT NULL)"
        )
        if version == 5:
            connection.execute("DROP TABLE index_pending")
            connection.execute("DROP TABLE index_eager")
        connection.execute("DELETE FROM store_meta WHERE key = 'index_id'")
        connection.execute(
            "UPDATE store_meta SET value = ? WHERE key = 'schema_version'", (str(version),)
        )
        connection.commit()
        connection.execute("DETACH DATABASE ix")
    delete_index_file(path)


def delete_index_file(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index_file(path)}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("version", [5, 7])
async def test_an_older_database_opens_with_its_index_moved_to_the_index_file(
    tmp_path: Path, version: int
) -> None:
    """No reindex needed: the rows move, with the parameters found to repeat."""
    path = tmp_path / "old.sqlite3"
    async with opened(path) as store:
        stack = Stack(store, path)
        twice = patient("p1", "Okafor")
        twice["name"].append({"family": "Mensah"})
        await stack.resources.update("Patient", "p1", twice)
        await stack.resources.update("Observation", "o1", observation("o1", "p1", "8867-4"))
    as_older_schema(path, version)
    async with opened(path) as upgraded:
        stack = Stack(upgraded, path)
        assert await stack.ids("Patient", [("family", "mensah")]) == ["p1"]
        assert await stack.ids("Observation", [("code", "8867-4")]) == ["o1"]
        await stack.resources.update("Patient", "p2", patient("p2", "Okafor"))
        assert await stack.ids("Patient", [("family", "okafor")]) == ["p1", "p2"]
        assert await upgraded.check() == []
    with closing(connect(path, read_only=True)) as connection:
        version_row = connection.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchone()
        in_main = connection.execute(
            "SELECT name FROM main.sqlite_master WHERE name LIKE 'idx%'"
        ).fetchall()
        repeated = connection.execute(
            "SELECT s.code FROM ix.param_multiple m JOIN search_param s ON s.pid = m.pid "
            "WHERE s.resource_type = 'Patient'"
        ).fetchall()
    assert version_row == (str(store_module.SCHEMA_VERSION),)
    assert in_main == []
    assert ("family",) in repeated


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
    """The index rows waiting in the log, as the store counts them: a deferred row's are
    estimated from its version's size (store.py, ``_index_rows``)."""
    counts = " + ".join(f"coalesce(json_array_length({table}), 0)" for table in INDEX_TABLE_NAMES)
    per_row = store_module.DEFERRED_BYTES_PER_ROW
    with closing(connect(stack.path, read_only=True)) as connection:
        total: int = connection.execute(
            f"SELECT sum(CASE WHEN p.deferred THEN max(1, length(v.body) / {per_row}) "
            f"ELSE {counts} END) FROM index_pending p "
            f"JOIN resource_version v ON v.seq = p.seq WHERE {PENDING}"
        ).fetchone()[0]
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


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def store_with_okafor(path: Path) -> None:
    """A closed store at ``path`` holding Patient p1, family Okafor."""
    async with opened(path) as store:
        await Stack(store, path).resources.update("Patient", "p1", patient("p1", "Okafor"))


def log_size(path: Path) -> int:
    """Rows in the log, applied or not."""
    with closing(connect(path, read_only=True)) as connection:
        count: int = connection.execute("SELECT COUNT(*) FROM index_pending").fetchone()[0]
    return count


async def test_writes_go_on_while_the_index_file_is_locked(stack: Stack) -> None:
    """Why the index has a file of its own: applying the log, here or in another process,
    holds up no write of resources (a stand-in holds the index file's lock throughout)."""
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    index = index_file(stack.path)
    lock = ProcessWriteLock(index)
    try:
        with lock.held(), closing(sqlite3.connect(index, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            for number in range(2, 6):
                written = stack.resources.update(
                    "Patient", f"p{number}", patient(f"p{number}", "Mensah")
                )
                await asyncio.wait_for(written, 10)
            holder.execute("ROLLBACK")
    finally:
        lock.close()
    assert await stack.ids("Patient", [("family", "mensah")]) == ["p2", "p3", "p4", "p5"]


async def test_applied_rows_leave_the_log_once_the_index_file_is_synced(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search's apply commits without an fsync: the rows it applied stay in the log
    (shown applied, not pending) until a durable apply of the indexer has synced the index
    file; then the writer forgets them."""
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    await stack.resources.update("Patient", "p2", patient("p2", "Mensah"))
    assert log_size(stack.path) == 2
    assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]  # applies both
    assert stack.logged() == []
    await asyncio.sleep(0.3)
    assert log_size(stack.path) == 2  # applied without a sync: not forgotten
    monkeypatch.setattr(store_module, "FORGET_DELAY_SECONDS", 0.05)
    await stack.store._on_indexer(stack.store._apply_backlog)  # nothing to apply: syncs
    await settled(lambda: log_size(stack.path) == 0)  # the writer forgets them
    assert log_size(stack.path) == 0


async def test_a_row_is_forgotten_only_once_its_version_is_applied(tmp_path: Path) -> None:
    """The writer forgets what the indexer applied; a newer version logged meanwhile
    stays, pending."""
    path = tmp_path / "forget.sqlite3"
    async with opened(path):
        pass
    with closing(connect(path)) as connection:
        connection.execute(
            "INSERT INTO index_pending (rkey, resource_type, existed, seq) "
            "VALUES (1, 'Patient', 0, 5), (2, 'Patient', 0, 7)"
        )
        forget_applied(connection, [(1, 4), (2, 7), (3, 1)])
        left = connection.execute("SELECT rkey, seq FROM index_pending").fetchall()
    assert left == [(1, 5)]


async def test_rows_applied_but_not_forgotten_are_swept_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A process that ended between its indexer's commit and its writer's leaves applied
    rows in the log: harmless (they are not pending), and gone at the next start."""
    path = tmp_path / "sweep.sqlite3"
    await store_with_okafor(path)
    with closing(connect(path)) as connection:
        connection.execute(
            "INSERT INTO index_pending (rkey, resource_type, existed, seq) "
            "SELECT rkey, 'Patient', 1, seq FROM ix.index_state"
        )
        connection.commit()
    assert log_size(path) == 1
    async with opened(path) as reopened:
        assert log_size(path) == 0
        assert await Stack(reopened, path).ids("Patient", [("family", "okafor")]) == ["p1"]


async def test_a_lost_index_file_is_reported_and_reindex_fills_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lost.sqlite3"
    await store_with_okafor(path)
    delete_index_file(path)
    reopened = SqliteStore(path)
    with caplog.at_level(logging.ERROR, logger="rofecare.storage"):
        await reopened.open()
    try:
        assert "does not hold the search index" in caplog.text
        assert "rofecare reindex" in caplog.text
        stack = Stack(reopened, path)
        assert await stack.ids("Patient", [("family", "okafor")]) == []
        index = SearchIndex(
            load_search_parameters(),
            load_definitions().is_resource_type,
            default_count=100,
            max_count=100,
        )
        summary = await reindex(reopened, index)
        assert summary.reindexed == 1
        assert await stack.ids("Patient", [("family", "okafor")]) == ["p1"]
    finally:
        await reopened.close()


async def test_rows_logged_while_the_indexer_applies_are_applied_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The indexer applies while writes go on: a write committed during an apply (here,
    made from inside it) is applied by the next one, with no search to ask for it."""
    monkeypatch.setattr(store_module, "APPLY_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(store_module, "EAGER_SECONDS", 0.0)
    path = tmp_path / "during.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        stack = Stack(store, path)
        loop = asyncio.get_running_loop()
        real = store_module.apply_logged
        during: list[str] = []

        def applying(connection: sqlite3.Connection, *args: Any, **kwargs: Any) -> Any:
            applied = real(connection, *args, **kwargs)
            if not during:
                during.append("p2")
                written = stack.resources.update("Patient", "p2", patient("p2", "Mensah"))
                asyncio.run_coroutine_threadsafe(written, loop).result(10)
            return applied

        monkeypatch.setattr(store_module, "apply_logged", applying)
        await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
        await settled(lambda: bool(during) and not stack.logged())
        assert during == ["p2"]
        assert stack.logged() == []
    finally:
        await store.close()


def restore(backup: Path, target: Path) -> None:
    """Put ``backup`` (a closed store's file, its WAL checkpointed) back in place."""
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, target)


async def test_an_index_file_newer_than_its_database_is_emptied_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The main file restored from a backup without its index file: the index holds
    versions the database never had (and rkeys it will assign to other resources)."""
    path = tmp_path / "restored.sqlite3"
    await store_with_okafor(path)
    shutil.copyfile(path, tmp_path / "backup.sqlite3")
    async with opened(path) as store:
        await Stack(store, path).resources.update("Patient", "p2", patient("p2", "Okafor"))
    restore(tmp_path / "backup.sqlite3", path)
    with caplog.at_level(logging.ERROR, logger="rofecare.storage"):
        async with opened(path) as store:
            assert "holds versions newer than" in caplog.text
            assert await Stack(store, path).ids("Patient", [("family", "okafor")]) == []


async def test_check_reports_an_index_file_older_than_its_database(tmp_path: Path) -> None:
    path = tmp_path / "older-index.sqlite3"
    await store_with_okafor(path)
    shutil.copyfile(index_file(path), tmp_path / "backup-index")
    async with opened(path) as store:
        stack = Stack(store, path)
        await stack.resources.update("Patient", "p1", patient("p1", "Mensah"))
        assert await store.check() == []  # its new rows are pending or applied
    restore(tmp_path / "backup-index", index_file(path))
    async with opened(path) as store:
        problems = await store.check()
    assert len(problems) == 1 and "1 resources are indexed at a version older" in problems[0]


FORGET_PLAN = (
    "EXPLAIN QUERY PLAN DELETE FROM index_pending WHERE rkey IN (SELECT p.rkey FROM "
    "json_each(?) applied JOIN index_pending p ON p.rkey = applied.value ->> 0 "
    "WHERE p.seq <= applied.value ->> 1)"
)


def _forget_scans_the_log(connection: sqlite3.Connection) -> bool:
    """Whether forgetting applied rows would read the whole log once per row (the plan
    SQLite chose when statistics said the log holds one row)."""
    steps = [row[3] for row in connection.execute(FORGET_PLAN, ("[[1, 1]]",))]
    return any(step.startswith(("SCAN index_pending", "SCAN p")) for step in steps)


async def test_statistics_never_describe_the_log_however_small_it_was(stack: Stack) -> None:
    """ANALYZE with one row in the log would tell the planner the log always holds one;
    the store leaves it without statistics, so each applied row is looked up by key."""
    await stack.resources.update("Patient", "p1", patient("p1", "Okafor"))
    assert len(stack.logged()) == 1
    await stack.store._on_writer(stack.store._analyze)
    with closing(connect(stack.path, read_only=True)) as connection:
        described = {row[0] for row in connection.execute("SELECT tbl FROM sqlite_stat1")}
        assert "resource_version" in described and "index_pending" not in described
        assert not _forget_scans_the_log(connection)
    writer = await stack.store._on_writer(stack.store._connection)
    assert not _forget_scans_the_log(writer)
