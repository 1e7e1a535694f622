"""Records indexed later (storage/base.py, ``WriteRecord.index_later``): the store computes
their entries from their bodies when it indexes them, and they are found as if the writer
had computed them (the server's own AuditEvents are written so, audit_trail.py)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import orjson
import pytest

from fhir_server.definitions import load_definitions
from fhir_server.events.audit import Action, Entity, rest_event
from fhir_server.model.instant import now_utc
from fhir_server.model.resource import with_meta
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.audit_trail import AuditTrail
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import WriteRecord
from fhir_server.storage.mongo.store import MongoStore
from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite import store as store_module
from fhir_server.storage.sqlite.fresh_writes import FreshWrites
from fhir_server.storage.sqlite.index_rows import INDEX_TABLE_NAMES
from fhir_server.storage.sqlite.schema import connect
from tests.unit.test_sqlite_index_log import Stack, slow_apply

__all__ = ["slow_apply"]  # a fixture used by name


def search_index() -> SearchIndex:
    definitions = load_definitions()
    return SearchIndex(
        load_search_parameters(), definitions.is_resource_type, default_count=50, max_count=1000
    )


RECORDED = "2026-12-04T10:00:00.000Z"


def audit_event(patient_id: str, action: Action = "C") -> dict[str, Any]:
    event = rest_event(
        access=None,
        interaction="create",
        action=action,
        recorded=RECORDED,
        entities=[Entity(f"Patient/{patient_id}", is_patient=True)],
        source_ip="10.0.0.7",
    )
    event["id"] = f"ae-{patient_id}-{action}"
    return with_meta(event, 1, event["recorded"])


def record(
    event: dict[str, Any], *, later: bool, index: SearchIndex, version: int = 1
) -> WriteRecord:
    entries, text = ((), None) if later else index.entries(event)
    return WriteRecord(
        resource_type="AuditEvent",
        resource_id=event["id"],
        version_id=version,
        previous_version=version - 1,
        last_updated=now_utc(),
        method="POST" if version == 1 else "PUT",
        body=orjson.dumps(event),
        entries=tuple(entries),
        full_text=text,
        index_later=later,
    )


@pytest.fixture
def quiet_log(slow_apply: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows stay in the log until a search applies them, AuditEvents' too."""
    monkeypatch.setattr(store_module, "BULK_APPLY_ROWS", 10**9)


@pytest.fixture
async def stack(tmp_path: Path, quiet_log: None) -> AsyncIterator[Stack]:
    path = tmp_path / "deferred.sqlite3"
    stack = audited_stack(path)
    await stack.store.open()
    try:
        yield stack
    finally:
        await stack.store.close()


def audited_stack(path: Path) -> Stack:
    """Services over a new store that indexes as the server's core has it: AuditEvents with
    the trail's composed indexer (the core's ResourceService, built with the trail, gives
    the store ``AuditTrail.index_entries``; the contract Stack's has no trail)."""
    stack = Stack(SqliteStore(path), path)
    stack.store.index_with(AuditTrail(stack.store, search_index()).index_entries)
    return stack


def index_rows(path: Path, resource_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row of one AuditEvent, table by table, without its rkey and number (the
    composed entries come in another order than the generic indexer's)."""
    with closing(connect(path, read_only=True)) as connection:
        (rkey,) = connection.execute(
            "SELECT rkey FROM resource_current WHERE resource_type = 'AuditEvent' AND id = ?",
            (resource_id,),
        ).fetchone()
        rows = {
            table: sorted(
                tuple(row[2:])
                for row in connection.execute(f"SELECT * FROM ix.{table} WHERE rkey = ?", (rkey,))
            )
            for table in INDEX_TABLE_NAMES
        }
        rows["idx_text"] = [  # _content matches words: their set, not their order
            (narrative, *sorted(set(content.split())))
            for narrative, content in connection.execute(
                "SELECT narrative, content FROM ix.idx_text WHERE rowid = ?", (rkey,)
            )
        ]
    return rows


async def test_a_deferred_row_is_logged_empty_and_indexed_as_a_computed_one(
    stack: Stack,
) -> None:
    index = search_index()
    deferred, computed = audit_event("p1"), audit_event("p2")
    await stack.store.write([record(deferred, later=True, index=index)])
    await stack.store.write([record(computed, later=False, index=index)])
    with closing(connect(stack.path, read_only=True)) as connection:
        logged = connection.execute(
            "SELECT p.deferred, p.idx_token, p.idx_reference, p.content FROM index_pending p "
            "JOIN resource_current c ON c.rkey = p.rkey ORDER BY c.id"
        ).fetchall()
    assert logged[0] == (1, None, None, None)  # p1: nothing but the mark
    assert logged[1][0] == 0 and logged[1][1] is not None  # p2: its rows as JSON

    assert await stack.ids("AuditEvent", [("entity", "Patient/p1")]) == ["ae-p1-C"]
    assert await stack.ids("AuditEvent", [("patient", "p1")]) == ["ae-p1-C"]
    assert await stack.ids("AuditEvent", [("action", "C")]) == ["ae-p1-C", "ae-p2-C"]
    assert await stack.ids("AuditEvent", [("date", "2026-12-04")]) == ["ae-p1-C", "ae-p2-C"]
    assert await stack.ids("AuditEvent", [("_content", "person")]) == ["ae-p1-C", "ae-p2-C"]
    assert stack.logged() == []

    # The same rows, table by table, but for the patient each names.
    p1, p2 = index_rows(stack.path, "ae-p1-C"), index_rows(stack.path, "ae-p2-C")
    as_p1 = orjson.loads(orjson.dumps(p2).replace(b"p2", b"p1"))
    assert orjson.loads(orjson.dumps(p1)) == as_p1
    assert sum(len(rows) for rows in p1.values()) > 10


async def test_parameters_the_applier_meets_first_are_interned_by_the_writer(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new database: no AuditEvent parameter has a pid when the indexer thread computes
    the deferred row (only the writer may intern); it has the writer intern them and
    applies again."""
    with closing(connect(stack.path, read_only=True)) as connection:
        before = connection.execute(
            "SELECT count(*) FROM search_param WHERE resource_type = 'AuditEvent'"
        ).fetchone()
    assert before == (0,)
    interned: list[Any] = []
    intern = stack.store._intern

    def spy(parameters: Any) -> None:
        interned.append(set(parameters))
        intern(parameters)

    monkeypatch.setattr(stack.store, "_intern", spy)
    await stack.store.write([record(audit_event("p1"), later=True, index=search_index())])
    assert await stack.ids("AuditEvent", [("entity-type", "1")]) == ["ae-p1-C"]
    assert len(interned) == 1 and ("AuditEvent", "entity", "reference") in interned[0]
    with closing(connect(stack.path, read_only=True)) as connection:
        interned = {
            code
            for (code,) in connection.execute(
                "SELECT code FROM search_param WHERE resource_type = 'AuditEvent'"
            )
        }
    assert {"entity", "entity-type", "action", "date", "patient"} <= interned


async def test_a_conditional_write_applies_deferred_rows_in_the_writer(stack: Stack) -> None:
    """A conditional create of AuditEvent has the writer apply the log of its type first,
    deferred rows included, computed there (it interns what it meets)."""
    await stack.store.write([record(audit_event("p1"), later=True, index=search_index())])
    outcome = await stack.resources.create(
        "AuditEvent", audit_event("p9", "R"), if_none_exist="entity=Patient/p1"
    )
    assert not outcome.created
    assert outcome.version.resource_id == "ae-p1-C"


async def test_a_store_without_an_index_function_refuses_such_a_record(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "bare.sqlite3")
    await store.open()
    try:
        with pytest.raises(RuntimeError, match="index_with"):
            await store.write([record(audit_event("p1"), later=True, index=search_index())])
    finally:
        await store.close()
    mongo = MongoStore(MagicMock(), "stand-in")  # no server: the check comes first
    with pytest.raises(RuntimeError, match="index_with"):
        await mongo.write([record(audit_event("p1"), later=True, index=search_index())])


def test_mongodb_computes_the_entries_when_it_writes() -> None:
    """A document carries its search fields from its first write: the record is given its
    entries before the transaction (the driver is a stand-in: nothing is sent)."""
    index = search_index()
    mongo = MongoStore(MagicMock(), "stand-in")
    mongo.index_with(index.entries)
    event = audit_event("p1")
    indexed = mongo._indexed(record(event, later=True, index=index))
    entries, text = index.entries(event)
    assert not indexed.index_later
    assert indexed.entries == tuple(entries) and indexed.full_text == text


def test_a_queued_record_indexed_later_is_judged_from_its_body() -> None:
    """A condition is judged against the writes queued in the same group commit from their
    entries (fresh_writes.py); a record indexed later has none until computed."""
    index = search_index()
    computed: list[str] = []

    def counted(resource: dict[str, Any]) -> Any:
        computed.append(resource["id"])
        return index.entries(resource)

    queued = FreshWrites(counted)
    queued.queue([record(audit_event("p1"), later=True, index=index)])
    plan = index.parser.parse(("AuditEvent",), [("action", "C")]).plan
    assert [match[1] for match in queued.matching(plan)] == ["ae-p1-C"]
    # Asked again at each condition of a run of conditional writes: computed once per
    # version, again for a newer one.
    assert [match[1] for match in queued.matching(plan)] == ["ae-p1-C"]
    assert computed == ["ae-p1-C"]
    newer = audit_event("p1", "R")
    newer["id"] = "ae-p1-C"
    queued.queue([record(newer, later=True, index=index, version=2)])
    assert queued.matching(plan) == []
    assert computed == ["ae-p1-C", "ae-p1-C"]


async def test_a_schema_9_database_opens_and_logs_with_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "nine.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("DROP INDEX index_pending_work")
        connection.execute("ALTER TABLE index_pending DROP COLUMN deferred")
        connection.execute(
            "CREATE INDEX index_pending_state ON index_pending (resource_type, rkey, seq, existed)"
        )
        connection.execute("UPDATE store_meta SET value = '9' WHERE key = 'schema_version'")
        connection.commit()
    stack = audited_stack(path)
    store = stack.store
    await store.open()
    try:
        await store.write([record(audit_event("p1"), later=True, index=search_index())])
        assert await stack.ids("AuditEvent", [("entity", "Patient/p1")]) == ["ae-p1-C"]
    finally:
        await store.close()
    with closing(connect(path, read_only=True)) as connection:
        indexes = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        version = connection.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert "index_pending_work" in indexes and "index_pending_state" not in indexes
    assert version == (str(store_module.SCHEMA_VERSION),)


def test_a_write_computes_only_the_entries_it_reads_itself() -> None:
    """Identifiers (the keys it claims) and Patient compartment references (the patients
    its AuditEvent names): the rest is the store's to compute (``index_later``)."""
    index = search_index()
    observation = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:lab", "value": "42"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Practitioner/d1"}],
        "focus": [{"reference": "Patient/p2"}],
    }
    written = {
        (entry.param, getattr(entry, "target_id", None))
        for entry in index.write_entries(observation)
    }
    assert written == {
        ("identifier", None),
        ("subject", "p1"),  # the R4 Patient compartment of Observation: subject, performer
        ("performer", "d1"),
    }
    everything = {entry.param for entry in index.entries(observation)[0]}
    assert {"code", "status", "focus", "patient"} <= everything - {param for param, _ in written}


async def test_rows_computed_ahead_are_applied_unless_a_newer_version_came(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applier computes a chunk's rows before it takes the index file's lock
    (``compute_ahead``); a version written meanwhile is computed afresh when applied."""
    index, store = search_index(), stack.store
    # Written with its entries: the writer interns AuditEvent's parameters (a row naming
    # a parameter without a pid is not computed ahead).
    await store.write([record(audit_event("p0"), later=False, index=index)])
    first, second = audit_event("p1"), audit_event("p2")
    await store.write([record(first, later=True, index=index)])
    await store.write([record(second, later=True, index=index)])
    ahead = await store._on_indexer(lambda: store._compute_ahead(100, ()))
    assert len(ahead) == 2

    moved = {**second, "entity": [{**second["entity"][0], "what": {"reference": "Patient/p3"}}]}
    moved = with_meta(moved, 2, RECORDED)
    await store.write([record(moved, later=True, index=index, version=2)])
    computed: list[str] = []
    index_of = store._index_of
    assert index_of is not None

    def spy(resource: dict[str, Any]) -> Any:
        computed.append(resource["entity"][0]["what"]["reference"])
        return index_of(resource)

    monkeypatch.setattr(store, "_index_of", spy)
    applied = await store._on_indexer(lambda: store._apply_durably(ahead=ahead))
    assert applied is not None and len(applied) == 3
    assert computed == ["Patient/p3"]  # the first as computed ahead; the second afresh
    assert await stack.ids("AuditEvent", [("entity", "Patient/p1")]) == ["ae-p1-C"]
    assert await stack.ids("AuditEvent", [("entity", "Patient/p3")]) == ["ae-p2-C"]
    assert await stack.ids("AuditEvent", [("entity", "Patient/p2")]) == []
    # Applied as if computed in the apply: p1's rows match a computed event's, but for p1.
    await store.write([record(audit_event("p4"), later=False, index=index)])
    assert await stack.ids("AuditEvent", [("entity", "Patient/p4")]) == ["ae-p4-C"]
    as_p1 = orjson.loads(orjson.dumps(index_rows(stack.path, "ae-p4-C")).replace(b"p4", b"p1"))
    assert orjson.loads(orjson.dumps(index_rows(stack.path, "ae-p1-C"))) == as_p1


async def test_the_applier_computes_ahead_on_a_nicer_thread(stack: Stack) -> None:
    """The computing that holds no lock yields the CPU to the writers' threads; the
    indexer thread, which takes the index file's lock, keeps the process's priority."""
    if sys.platform != "linux":  # pragma: no cover
        pytest.skip("needs /proc to read a thread's nice value")
    store = stack.store

    def nice() -> int:
        stat = Path(f"/proc/self/task/{threading.get_native_id()}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[16])

    process = os.getpriority(os.PRIO_PROCESS, 0)
    ahead = await asyncio.wrap_future(store._ahead.submit(nice))
    indexer = await store._on_indexer(nice)
    assert indexer == process
    assert ahead == min(19, process + store_module.AHEAD_NICENESS)
