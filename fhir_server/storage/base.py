"""The storage contract every backend (SQLite, MongoDB) fulfils.

A store receives fully prepared records (JSON bytes with ``meta`` already set, the version
number, the search index entries) and persists them atomically; it evaluates no FHIRPath
and knows no FHIR rules beyond versions. Version numbers give optimistic concurrency: a
record says which version it replaces, and a store refuses it with ``VersionConflict`` when
another writer got there first, so no update is ever lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from fhir_server.search.plan import SearchPlan
from fhir_server.search.values import FullText, IndexEntry

Method = Literal["POST", "PUT", "PATCH", "DELETE"]

IndexOf = Callable[[dict[str, Any]], tuple[Sequence[IndexEntry], FullText | None]]
"""A resource -> its index entries and full text: what a store indexes a record marked
``index_later`` with (``ResourceStore.index_with``)."""


class VersionConflict(Exception):
    """The resource's current version is not the one the write was prepared against."""

    def __init__(self, resource_type: str, resource_id: str, current_version: int | None) -> None:
        super().__init__(f"{resource_type}/{resource_id} is now at version {current_version}")
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.current_version = current_version


class ConditionMatched(VersionConflict):
    """A conditional create found, inside the write transaction, a resource matching its
    condition that appeared after the condition was first searched (another writer, perhaps
    in another process, created it meanwhile): nothing of the write is persisted, and the
    service answers with the match instead."""

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(resource_type, resource_id, None)


@dataclass(frozen=True)
class WriteGuard:
    """A hospital rule that no other current resource may match ``plan`` once this write
    is persisted (one active admission per patient, no overlapping appointment on a
    practitioner...), checked by the store inside the write transaction after every write
    committed or queued before it, like ``unless_exists``. Resources written by the same
    transaction are not counted: the service checked their new content already.

    ``lock`` names what the guard protects (``admission:Patient/1``): MongoDB writes a
    document of that name in the transaction, so two writers under one lock conflict and
    run one after the other, even when their plans differ (two overlapping appointments
    of one practitioner at different times). SQLite writes one transaction at a time.
    """

    plan: SearchPlan
    lock: str
    code: str  # the rule's rofecare code, for the answer
    message: str
    # (type, id, version) of matches the rule read and judged harmless (a plan is coarser
    # than the rule: an appointment ending exactly when another starts): they do not
    # count, unless they changed since.
    tolerated: frozenset[tuple[str, str, int]] = frozenset()

    def counts(self, resource_type: str, resource_id: str, version_id: int) -> bool:
        return (resource_type, resource_id, version_id) not in self.tolerated


@dataclass(frozen=True)
class Claim:
    """A key the write's resource claims, which no other current resource may hold once it
    commits (a medical record number in its system, a patient's one active admission).

    Why beside ``WriteGuard``: a guard searches the index, so on SQLite every guarded write
    first had the logged index rows of its type applied (index_log.py), one small batch per
    commit, and with search indexing off the search found nothing and the rule held nothing.
    Claims are kept for every write of a claiming type, in the write's own transaction,
    whatever the indexing or the rules mode; checking one is one key lookup. A guard stays
    the tool for what no key can say (two appointments that overlap)."""

    key: str
    code: str  # the rule's rofecare code, for the answer
    message: str


class GuardViolated(Exception):
    """A guard or a claim found a conflicting resource inside the write transaction:
    another writer got there first. Nothing of the write is persisted."""

    def __init__(self, guard: WriteGuard | Claim, resource_type: str, resource_id: str) -> None:
        super().__init__(guard.message)
        self.guard = guard
        self.resource_type = resource_type
        self.resource_id = resource_id


@dataclass(frozen=True)
class WriteRecord:
    """One new version, ready to persist.

    ``previous_version`` is the version this write replaces: 0 when the resource must not
    exist yet (create), else the current version seen when the record was prepared.
    ``unless_exists`` makes a conditional create atomic: the store persists the record's
    write only if no current resource matches this plan, checked in the write transaction
    after every write committed or queued before it (else ``ConditionMatched``). A search
    before the write is not enough: two worker processes share no lock, and both found
    nothing.

    ``claims``: the keys this version holds (``Claim``), replacing the resource's earlier
    ones; None when its type claims nothing, and the store leaves them alone. ``enforced``:
    the claims the store checks no other current resource holds (GuardViolated).

    ``index_later``: the store computes the version's index entries and full text from its
    body, with the function given to ``index_with``, when it indexes it; ``entries`` then
    holds only those the write reads itself (its identifiers, for the claims; its Patient
    compartment references, for its AuditEvent: ``SearchIndex.write_entries``). Computing
    all of them on the event loop delayed every write; the SQLite store computes them when
    it applies its index log, under ``serve --workers N`` in a process of its own
    (index_log.py, index_process.py). MongoDB computes them when it writes.
    """

    resource_type: str
    resource_id: str
    version_id: int
    previous_version: int
    last_updated: datetime
    method: Method
    body: bytes | None
    entries: tuple[IndexEntry, ...] = field(default_factory=tuple)
    full_text: FullText | None = None
    unless_exists: SearchPlan | None = None
    guards: tuple[WriteGuard, ...] = ()
    claims: tuple[str, ...] | None = None
    enforced: tuple[Claim, ...] = ()
    index_later: bool = False

    @property
    def deleted(self) -> bool:
        return self.body is None

    def as_version(self) -> StoredVersion:
        """The version this record becomes once written."""
        return StoredVersion(
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            version_id=self.version_id,
            last_updated=self.last_updated,
            method=self.method,
            body=self.body,
        )


@dataclass(frozen=True)
class IndexRecord:
    """Fresh search index entries for a resource's current version (``rofecare reindex``),
    and its claims (None: its type claims nothing; they are left alone)."""

    resource_type: str
    resource_id: str
    version_id: int
    entries: tuple[IndexEntry, ...]
    full_text: FullText | None
    claims: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StoredVersion:
    """One version as kept by the store; ``body`` is None for a deletion."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    method: Method
    body: bytes | None

    @property
    def deleted(self) -> bool:
        return self.body is None


@dataclass(frozen=True)
class HistoryQuery:
    """History at system (no type), type (no id) or instance level (https://hl7.org/fhir/R4/http.html#history)."""

    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    at: tuple[datetime, datetime] | None = None
    count: int = 50
    cursor: int | None = None


@dataclass(frozen=True)
class HistoryPage:
    versions: list[StoredVersion]
    next_cursor: int | None
    total: int | None = None


@dataclass(frozen=True)
class SearchPage:
    """One page of a search: the matches in order, the resources ``_include``/``_revinclude``
    pulled in, the total when asked for, and opaque cursors for the neighbouring pages."""

    matches: list[StoredVersion]
    included: list[StoredVersion]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None


@dataclass(frozen=True)
class CurrentPage:
    """Current versions in store order, for reindexing; ``next_cursor`` None at the end."""

    versions: list[StoredVersion]
    next_cursor: int | None


class ResourceStore(Protocol):
    """What the service layer needs from a backend. All methods are safe to call concurrently."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def index_with(self, index_of: IndexOf) -> None:
        """The function the store indexes records marked ``index_later`` with; such a
        record written before it was given is refused (RuntimeError)."""
        ...

    async def read(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The current version (possibly a deletion), or None if the id never existed."""
        ...

    async def vread(
        self, resource_type: str, resource_id: str, version_id: int
    ) -> StoredVersion | None: ...

    async def write(self, records: Sequence[WriteRecord]) -> None:
        """Persist all records in one atomic, durable transaction, or none of them.

        Raises VersionConflict when a record's ``previous_version`` is not the current one.
        """
        ...

    async def history(self, query: HistoryQuery) -> HistoryPage: ...

    async def latest_change(self, resource_type: str) -> int:
        """A number that grows whenever a resource of ``resource_type`` is written (by any
        process sharing the store); 0 when none ever was. Lets a worker notice, cheaply,
        that another one changed definitions it caches (SearchParameters)."""
        ...

    async def search(self, plan: SearchPlan) -> SearchPage:
        """Current, non-deleted resources matching ``plan``; 400 (BadRequest) for a cursor
        this store did not issue."""
        ...

    async def current(self, cursor: int | None, limit: int) -> CurrentPage:
        """Current non-deleted versions after ``cursor``, in a stable order."""
        ...

    async def claimants(self, keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """(type, id) of the current resources holding each of ``keys`` (``Claim``), as
        committed; keys nobody holds are absent."""
        ...

    async def replace_index(self, records: Sequence[IndexRecord]) -> int:
        """Replace the index entries (and claims) of each record's resource if it is still
        at that version (a concurrent write already indexed a newer one); how many were."""
        ...

    async def check(self) -> list[str]:
        """Consistency problems found in the stored data (empty when sound)."""
        ...
