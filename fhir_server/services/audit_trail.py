"""The audit trail: an AuditEvent for every write, read of patient data, login and denial.

Writes are audited in the transaction of the write itself (DESIGN.md, "One write path"):
the AuditEvent is one more record in the same ``store.write``, so a write without its
audit, or an audit of a write that rolled back, cannot happen. One commit (a single
interaction, or a whole transaction Bundle) gets one AuditEvent naming every resource it
wrote and every patient whose record they belong to.

Reads, logins and denials change nothing to commit with, and auditing each in a
transaction of its own would cost a read more than the read (issue 6 asks that audit not
halve read throughput). They are queued and written in batches by a background task, at
most ``FLUSH_SECONDS`` later, and the reads of one requestor (user, client, address, kind
of read) within one flush share AuditEvents that name every resource and patient read (once,
however often it was read) and every query: at 5,000 reads a second, a handful of
AuditEvents a second instead of 5,000. The price: a crash of the process loses the audit of
the reads of its last fraction of a second, never of a write. The queue is bounded; when it
is full the request waits for room (back-pressure), it never drops an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from fhir_server.auth.context import Access, client_address
from fhir_server.definitions.registry import load_patient_compartment
from fhir_server.events.audit import Action, Entity, rest_event
from fhir_server.model.ids import new_id
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.model.resource import with_meta
from fhir_server.search.values import FullText, IndexEntry, ReferenceEntry
from fhir_server.services.audit_index import AuditEventIndexer
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import ResourceStore, StoredVersion, WriteRecord

log = logging.getLogger("rofecare.audit")

FLUSH_SECONDS = 0.25
MAX_QUEUED = 10_000
BATCH = 500  # a backlog this long is written at once, without waiting
MAX_BATCH = 5_000
ENTITIES_PER_EVENT = 100  # a read AuditEvent names about this many resources and patients
QUERIES_PER_EVENT = 50  # ... and at most this many queries (under MAX_QUERIES)
STOP_SECONDS = 10.0  # how long shutdown waits for the queued events to be written
DIRECT_PATIENT_LINKS = ("subject", "patient", "beneficiary")
WRITE_INTERACTIONS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
WRITE_ACTIONS: dict[str, Action] = {"POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}


class ReadAudit(NamedTuple):
    """A read to audit later: what was returned (bodies are parsed by the flusher). A tuple:
    one is made per read, and a frozen dataclass cost several times as much."""

    access: Access | None
    interaction: str  # read, vread, search-type, history-instance, operation...
    versions: tuple[StoredVersion, ...]
    query: str | None
    address: str | None  # the client's network address


class AuditTrail:
    def __init__(self, store: ResourceStore, index: SearchIndex) -> None:
        self._store = store
        self._index = index
        self._indexer = AuditEventIndexer(index)
        self._indexer_lock = threading.Lock()  # its caches, from the store's threads
        self._pending: list[ReadAudit | dict[str, Any]] = []
        self._wake = asyncio.Event()  # something is pending
        self._room = asyncio.Event()  # fewer than MAX_QUEUED are pending
        self._idle = asyncio.Event()  # nothing pending and nothing being written
        self._task: asyncio.Task[None] | None = None

    def index_entries(
        self, resource: dict[str, Any]
    ) -> tuple[Sequence[IndexEntry], FullText | None]:
        """The index entries of ``resource``, an AuditEvent's composed (audit_index.py):
        what the store indexes writes with when it indexes them (they are written
        ``index_later``; ResourceService gives it to the store). Called from the store's
        threads."""
        if resource.get("resourceType") != "AuditEvent":
            return self._index.entries(resource)
        with self._indexer_lock:
            return self._indexer.entries(resource)

    # -- writes: in the same transaction --------------------------------------------------

    def for_writes(
        self,
        records: Sequence[WriteRecord],
        access: Access | None,
        several: str | None = None,
    ) -> WriteRecord:
        """The AuditEvent record to commit with ``records``: of ``several`` (a transaction,
        a group of batch entries) when they are more than one, else of the first record's
        interaction (the others its companions, such as the Flag of an abnormal result)."""
        first = records[0]
        action: Action = "E"
        if several is not None and len(records) > 1:
            interaction = several
        else:
            interaction = WRITE_INTERACTIONS.get(first.method, "update")
            action = WRITE_ACTIONS.get(first.method, "U")
        entities: list[Entity] = []
        for record in records:
            entities.append(Entity(f"{record.resource_type}/{record.resource_id}"))
            entities.extend(
                Entity(f"Patient/{patient}", is_patient=True)
                for patient in _patients(record.resource_type, record.resource_id, record.entries)
            )
        event = rest_event(
            access=access,
            interaction=interaction,
            action=action,
            recorded=to_instant(first.last_updated),
            entities=entities,
            source_ip=client_address(),
        )
        return self._record(event, first.last_updated)

    def _record(self, event: dict[str, Any], moment: Any) -> WriteRecord:
        """The event's record, its index entries left to the store (``index_later``): a
        write waited for them, and nothing in it reads them."""
        event["id"] = new_id()
        body = with_meta(event, 1, to_instant(moment))
        return WriteRecord(
            resource_type="AuditEvent",
            resource_id=body["id"],
            version_id=1,
            previous_version=0,
            last_updated=moment,
            method="POST",
            body=orjson.dumps(body),
            index_later=self._index.enabled,  # without search indexing, nothing to index
        )

    # -- reads, logins, denials: queued ----------------------------------------------------

    async def start(self) -> None:
        self._pending = []
        self._wake, self._room, self._idle = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._room.set()
        self._idle.set()
        self._task = asyncio.create_task(self._run(), name="rofecare-audit-flush")

    async def stop(self) -> None:
        """Write what is queued, then stop (the server's shutdown waits for this)."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), STOP_SECONDS)
        except TimeoutError:
            log.error(
                "audit trail: the store did not take %d queued events before shutdown",
                len(self._pending),
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until every queued event is written."""
        if self._task is not None:
            await self._idle.wait()

    async def read(
        self,
        access: Access | None,
        interaction: str,
        versions: Iterable[StoredVersion],
        query: str | None = None,
    ) -> None:
        if access is None or self._task is None:
            return  # the server's own reads, or authentication off: nothing to attribute
        await self._enqueue(
            ReadAudit(access, interaction, tuple(versions), query, client_address())
        )

    async def event(self, event: dict[str, Any]) -> None:
        """A ready AuditEvent (a login, a denial)."""
        if self._task is None:
            await self._write([event])
            return
        await self._enqueue(event)

    async def _enqueue(self, item: ReadAudit | dict[str, Any]) -> None:
        """A list append on the read path (an ``asyncio.Queue`` costs a read several µs);
        only a full queue makes the request wait."""
        while len(self._pending) >= MAX_QUEUED:
            self._room.clear()
            await self._room.wait()
        self._pending.append(item)
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < BATCH:
                await asyncio.sleep(FLUSH_SECONDS)  # let a batch gather
            items, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if not self._pending:
                self._wake.clear()
            self._room.set()
            try:
                records = await self._records(items)
            except Exception:
                # A bug building one event must not stop the audit of everything after it.
                log.exception("audit trail: %d queued events could not be built", len(items))
                records = []
            while records:
                try:
                    await self._store.write(records)
                    break
                except Exception:
                    # The store refused (down, full): hold them and try again; the queue
                    # fills meanwhile and requests wait for room: nothing is dropped.
                    log.exception("audit trail: %d events not written yet, retrying", len(records))
                    await asyncio.sleep(1.0)
            if not self._pending:
                self._idle.set()

    def _events(self, items: list[ReadAudit | dict[str, Any]]) -> list[dict[str, Any]]:
        """The read AuditEvents of one requestor, client, address and kind of read per
        flush (as many as it takes to name every resource and patient read, and every
        query), plus the ready events (logins, denials) as they are: a busy reader costs a
        few writes a second, not one per read."""
        events = [item for item in items if isinstance(item, dict)]
        groups: dict[tuple[Any, ...], list[ReadAudit]] = {}
        for item in items:
            if isinstance(item, ReadAudit):
                access = item.access
                assert access is not None
                key = (access.subject, access.client_id, item.address, item.interaction)
                groups.setdefault(key, []).append(item)
        for reads in groups.values():
            events.extend(self._read_events(reads))
        return events

    def _read_events(self, reads: list[ReadAudit]) -> list[dict[str, Any]]:
        """The reads of one requestor within one flush. A resource read again within the
        flush is named once (the events of one flush share their requestor and time, so
        together they say the same): a client re-reading the same records costs the audit
        one entity each per flush, not one per read."""
        first = reads[0]
        recorded = to_instant(now_utc())
        events: list[dict[str, Any]] = []
        named: list[Entity] = []  # in the event being built
        queries: list[str] = []
        seen: set[str] = set()  # named in this flush

        def close() -> None:
            events.append(
                rest_event(
                    access=first.access,
                    interaction=first.interaction,
                    action="R" if first.interaction in ("read", "vread") else "E",
                    recorded=recorded,
                    entities=named,
                    queries=queries,
                    source_ip=first.address,
                )
            )

        for read in reads:
            exact = len(read.versions) == 1
            for version in read.versions:
                if len(named) >= ENTITIES_PER_EVENT:
                    close()
                    named, queries = [], []
                for entity in self._version_entities(version, exact):
                    if entity.reference not in seen:
                        seen.add(entity.reference)
                        named.append(entity)
            if read.query:
                if len(queries) >= QUERIES_PER_EVENT:
                    close()
                    named, queries = [], []
                queries.append(read.query)
        if named or queries:
            close()
        return events

    def _version_entities(self, version: StoredVersion, exact: bool) -> list[Entity]:
        reference = f"{version.resource_type}/{version.resource_id}"
        if version.resource_type == "Patient":
            return [Entity(reference, is_patient=True)]  # the patient entity itself
        return [
            Entity(reference),
            *(
                Entity(f"Patient/{patient}", is_patient=True)
                for patient in self._version_patients(version, exact)
            ),
        ]

    def _version_patients(self, version: StoredVersion, exact: bool) -> list[str]:
        """Whose record ``version`` is. ``exact``: through every compartment parameter (the
        indexer; for single reads); else the common direct links only (``subject``,
        ``patient``, ``beneficiary``: a search page of 50 would otherwise cost the flusher
        more CPU than the search)."""
        if version.resource_type not in load_patient_compartment() or version.body is None:
            return []
        body = orjson.loads(version.body)
        if exact:
            entries = self._index.indexer.entries(body)
            return _patients(version.resource_type, version.resource_id, entries)
        found = []
        for field in DIRECT_PATIENT_LINKS:
            value = body.get(field)
            reference = value.get("reference") if isinstance(value, dict) else None
            if isinstance(reference, str) and reference.startswith("Patient/"):
                found.append(reference.removeprefix("Patient/"))
        return found

    async def _records(self, items: list[ReadAudit | dict[str, Any]]) -> list[WriteRecord]:
        """The AuditEvents of ``items``, ready to write. Building one (and its index
        entries) is about 0.5 ms of CPU: the loop serves requests between two, rather than
        stall for a whole batch (a thread would contend for the GIL instead)."""
        moment = now_utc()
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        records = []
        for event in self._events(items):
            records.append(self._record(event, moment))
            await asyncio.sleep(0)
        return records

    async def _write(self, events: list[dict[str, Any]]) -> None:
        moment = now_utc()
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        await self._store.write([self._record(event, moment) for event in events])


def _patients(resource_type: str, resource_id: str, entries: Iterable[Any]) -> list[str]:
    """The patients whose compartment a resource is in, from its index entries."""
    if resource_type == "Patient":
        return [resource_id]
    links = load_patient_compartment().get(resource_type)
    if not links:
        return []
    return sorted(
        {
            entry.target_id
            for entry in entries
            if isinstance(entry, ReferenceEntry)
            and entry.param in links
            and entry.target_type == "Patient"
            and entry.target_id is not None
        }
    )
