"""Batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

A **transaction** is all or nothing. Its entries are parsed and checked first; the server
then decides each entry's target (new ids for creates, matches of conditional URLs and
``ifNoneExist``), rewrites every reference to the entries' ``fullUrl``s and every
conditional reference, and runs the writes in the order the specification sets (DELETE,
POST, PUT/PATCH) through the ordinary service methods while a stage (``staging.py``) holds
their records. The records are then committed in one storage transaction; if another writer
changed one of the resources meanwhile, nothing is written and the whole transaction runs
again on fresh data. Reads (GET, HEAD) run last, after the commit, so they see its writes.
Any failure answers the failing entry's status with an OperationOutcome naming the entry.

A **batch** runs each entry on its own: one entry's failure is reported in its own response
entry and never affects another.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import random
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

from fhir_server.errors import (
    BadRequest,
    Conflict,
    FhirError,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
)
from fhir_server.model.ids import is_valid_id, new_id, parse_etag
from fhir_server.services.locks import KeyedLocks
from fhir_server.services.references import (
    collect_conditional_references,
    conditional_reference,
    mentioned_placeholders,
    rewrite_references,
    substitute_placeholders,
)
from fhir_server.services.resources import ResourceService, WriteResult
from fhir_server.services.search import SearchResult, SearchService
from fhir_server.services.staging import ONE_WRITE_PER_RESOURCE, end_stage, start_stage
from fhir_server.storage.base import StoredVersion, VersionConflict

WRITE_METHODS = ("DELETE", "POST", "PUT", "PATCH")
METHODS = (*WRITE_METHODS, "GET", "HEAD")
# http.html#trules: deletes, then creates, then updates, then reads.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
TRANSACTION_ATTEMPTS = 10
BATCH_CONCURRENCY = 16  # reads, and writes run one by one, at once (sharing group commits)
BATCH_GROUP = 100  # batch writes staged and committed together (see _batch_group)
BATCH_GROUPS_AT_ONCE = 2  # one is staged while the other commits
JSON_PATCH = "application/json-patch+json"
T = TypeVar("T")


@dataclass
class ParsedEntry:
    """One ``Bundle.entry`` with its request taken apart."""

    index: int
    method: str
    url: str
    resource_type: str
    resource_id: str | None = None
    version_id: str | None = None
    query: str | None = None  # a conditional URL's or a search's query
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_match: int | None = None
    if_none_exist: str | None = None
    # decided before the writes
    target_id: str | None = None
    matched: StoredVersion | None = None  # conditional create: the existing resource
    create_new: bool = False  # conditional update without a match or a body id
    criteria: str | None = None  # the condition as searched, placeholders resolved
    same_as: ParsedEntry | None = None  # an earlier conditional create with this condition
    result: WriteResult | None = None
    nothing_to_do: bool = False  # conditional delete without a match

    @property
    def conditional(self) -> bool:
        if self.method == "POST":
            return self.if_none_exist is not None
        return self.query is not None and self.method in WRITE_METHODS


@dataclass
class EntryOutcome:
    """What one entry did: a write, a read, a search, or an error."""

    status: int
    write: WriteResult | None = None
    read: StoredVersion | None = None
    search: SearchResult | None = None
    search_pairs: list[tuple[str, str]] = field(default_factory=list)
    search_path: str = ""
    error: FhirError | None = None


@dataclass
class BundleOutcome:
    kind: str  # "transaction" or "batch"
    entries: list[EntryOutcome]


class BundleService:
    def __init__(
        self, resources: ResourceService, search: SearchService, *, max_entries: int
    ) -> None:
        self._resources = resources
        self._search = search
        self._max_entries = max_entries
        self._locks = KeyedLocks()

    async def process(self, bundle: Any, *, base_url: str) -> BundleOutcome:
        kind, raw_entries = self._bundle_entries(bundle)
        if kind == "transaction":
            entries = [parse_entry(index, raw, base_url) for index, raw in enumerate(raw_entries)]
            _check_unique_full_urls(entries)
            return BundleOutcome(kind, await self._transaction(entries, base_url))
        return BundleOutcome(kind, await self._batch(raw_entries, base_url))

    def _bundle_entries(self, bundle: Any) -> tuple[str, list[Any]]:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise BadRequest(
                "POST to the base takes a Bundle of type transaction or batch",
                expression="Bundle",
                rofecare_code="rofecare-2401",
            )
        kind = bundle.get("type")
        if kind not in ("transaction", "batch"):
            raise BadRequest(
                f"Bundle.type must be transaction or batch, not {str(kind)[:40]!r}",
                expression="Bundle.type",
                rofecare_code="rofecare-2401",
            )
        raw_entries = bundle.get("entry", [])
        if not isinstance(raw_entries, list):
            raise BadRequest(
                "Bundle.entry must be an array", expression="Bundle.entry",
                rofecare_code="rofecare-2402",
            )  # fmt: skip
        if len(raw_entries) > self._max_entries:
            raise PayloadTooLarge(
                f"The Bundle has {len(raw_entries)} entries; this server takes at most "
                f"{self._max_entries} per Bundle (ROFECARE_MAX_BUNDLE_ENTRIES)",
                expression="Bundle.entry",
                rofecare_code="rofecare-2409",
            )
        return str(kind), raw_entries

    # -- transaction -----------------------------------------------------------------------

    async def _transaction(self, entries: list[ParsedEntry], base_url: str) -> list[EntryOutcome]:
        """Stage, commit, and start again on a conflict. Transactions of this process that
        name the same resources by id queue on them (in one global order, so they cannot
        deadlock) instead of failing each other's commits over and over."""
        keys: set[tuple[str, ...]] = set()
        for entry in entries:
            key = _lock_key(entry)
            if key is not None:
                keys.add(key)
        async with AsyncExitStack() as held:
            for key in sorted(keys):
                await held.enter_async_context(self._locks.hold(key))
            return await self._attempts(entries, base_url)

    async def _attempts(self, entries: list[ParsedEntry], base_url: str) -> list[EntryOutcome]:
        for attempt in range(TRANSACTION_ATTEMPTS):
            fresh = [copy.copy(entry) for entry in entries]
            await self._resources.refresh_search_parameters()  # once, not per entry
            stage, token = start_stage()
            try:
                outcomes = await self._stage_writes(fresh)
                for entry in fresh:  # reads last; one that fails fails the transaction
                    if entry.method in ("GET", "HEAD"):
                        outcomes[entry.index] = await _at_entry(entry, self._read(entry, base_url))
                await self._resources.commit_stage(stage)
            except VersionConflict:
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                continue
            finally:
                end_stage(token)
            return [outcomes[index] for index in range(len(entries))]
        raise Conflict(
            "The transaction's resources kept changing under concurrent writers; retry it",
            rofecare_code="rofecare-2411",
        )

    async def _stage_writes(self, entries: list[ParsedEntry]) -> dict[int, EntryOutcome]:
        targets = await self._resolve_targets(entries)
        conditionals = await self._resolve_conditional_references(entries, targets)
        for entry in entries:
            if entry.resource is not None:
                entry.resource = _rewritten(entry, targets, conditionals)
        outcomes: dict[int, EntryOutcome] = {}
        for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
            if entry.method in WRITE_METHODS:
                outcome = await _at_entry(entry, self._write(entry))
                entry.result = outcome.write
                outcomes[entry.index] = outcome
        return outcomes

    async def _resolve_targets(self, entries: list[ParsedEntry]) -> dict[str, str]:
        """fullUrl -> ``Type/id`` for every entry, deciding conditional entries by search.

        A condition may mention another entry's placeholder; it runs once that entry's
        target is known. Conditions waiting on each other can never run: a 400."""
        targets: dict[str, str] = {}
        pending: list[ParsedEntry] = []
        creates: dict[tuple[str, str], ParsedEntry] = {}  # one condition, one resource
        for entry in entries:
            if entry.conditional:
                pending.append(entry)
                continue
            if entry.method == "POST":
                entry.target_id = new_id()
            else:
                entry.target_id = entry.resource_id
            _add_target(targets, entry)
        known_urls = {entry.full_url for entry in entries if entry.full_url}
        while pending:
            ready = [entry for entry in pending if _ready(entry, targets, known_urls)]
            if not ready:
                first = pending[0]
                raise BadRequest(
                    "Conditions of the transaction depend on each other in a circle "
                    f"(entries {', '.join(str(e.index) for e in pending)})",
                    expression=f"Bundle.entry[{first.index}].request",
                    rofecare_code="rofecare-2408",
                )
            for entry in ready:
                pending.remove(entry)
                condition = (entry.resource_type, entry.if_none_exist or "")
                if entry.method == "POST" and condition in creates:
                    # Two entries creating "the same" resource: the first creates it, the
                    # second answers it, as if the first had been committed before.
                    entry.same_as = creates[condition]
                    entry.target_id = entry.same_as.target_id
                else:
                    await _at_entry(entry, self._decide_conditional(entry, targets))
                    if entry.method == "POST" and entry.matched is None:
                        creates[condition] = entry
                _add_target(targets, entry)
        return targets

    async def _decide_conditional(self, entry: ParsedEntry, targets: dict[str, str]) -> None:
        criteria = substitute_placeholders(entry.if_none_exist or entry.query or "", targets)
        entry.criteria = criteria
        matches = await self._resources.find(entry.resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"The condition {criteria[:120]!r} matches more than one {entry.resource_type}",
                rofecare_code="rofecare-2407",
            )
        match = matches[0] if matches else None
        body_id = entry.resource.get("id") if entry.resource else None
        if entry.method == "POST":
            entry.matched = match
            entry.target_id = match.resource_id if match else new_id()
        elif entry.method == "PUT":
            if match is not None:
                entry.target_id = match.resource_id
            elif isinstance(body_id, str):
                existing = await self._resources.current(entry.resource_type, body_id)
                if existing is not None and not existing.deleted:
                    raise PreconditionFailed(
                        f"{entry.resource_type}/{body_id} exists but does not match the condition",
                        rofecare_code="rofecare-1209",
                    )
                entry.target_id = body_id
            else:
                entry.target_id = new_id()
                entry.create_new = True
        elif match is None:  # DELETE or PATCH
            if entry.method == "PATCH":
                raise NotFound(
                    f"No {entry.resource_type} matches {criteria[:120]!r}",
                    rofecare_code="rofecare-1102",
                )
            entry.nothing_to_do = True
        else:
            entry.target_id = match.resource_id

    async def _resolve_conditional_references(
        self, entries: list[ParsedEntry], targets: dict[str, str]
    ) -> dict[str, str]:
        """Each distinct conditional reference of the Bundle, resolved to exactly one match."""
        resolved: dict[str, str] = {}
        for entry in entries:
            found: set[str] = set()
            collect_conditional_references(entry.resource, found)
            for reference in sorted(found - resolved.keys()):
                resolved[reference] = await _at_entry(
                    entry, self._resolve_reference(reference, targets)
                )
        return resolved

    async def _resolve_reference(self, reference: str, targets: dict[str, str]) -> str:
        parts = conditional_reference(reference)
        assert parts is not None
        resource_type, query = parts
        if any(url not in targets for url in mentioned_placeholders(query)):
            raise BadRequest(
                f"The conditional reference {reference[:120]!r} names an unknown entry",
                rofecare_code="rofecare-2405",
            )
        matches = await self._resources.find(resource_type, substitute_placeholders(query, targets))
        if len(matches) != 1:
            several = len(matches) > 1
            raise PreconditionFailed(
                f"The conditional reference {reference[:120]!r} matches "
                + ("more than one resource" if several else "no resource"),
                rofecare_code="rofecare-2407" if several else "rofecare-2406",
            )
        return f"{resource_type}/{matches[0].resource_id}"

    # -- one entry -------------------------------------------------------------------------

    async def _write(self, entry: ParsedEntry) -> EntryOutcome:
        resources = self._resources
        if entry.method == "DELETE":
            if entry.nothing_to_do:
                return EntryOutcome(204)
            assert entry.target_id is not None
            result = await resources.delete(
                entry.resource_type, entry.target_id, if_match=entry.if_match
            )
            return EntryOutcome(200, write=result)
        if entry.same_as is not None:
            assert entry.same_as.result is not None
            return EntryOutcome(200, write=replace(entry.same_as.result, created=False))
        if entry.method == "POST" or entry.create_new:
            if entry.matched is not None:
                return EntryOutcome(200, write=WriteResult(entry.matched, False, changed=False))
            # A conditional create is written only if its condition still matches nothing
            # then (another process may have created a match since it was searched).
            result = await resources.create(
                entry.resource_type,
                entry.resource,
                assigned_id=entry.target_id,
                unless_exists=entry.criteria,
            )
            # 200 when another process created a match after the condition was searched.
            return EntryOutcome(201 if result.created else 200, write=result)
        assert entry.target_id is not None
        if entry.method == "PATCH":
            result = await resources.patch(
                entry.resource_type,
                entry.target_id,
                _json_patch(entry),
                if_match=entry.if_match,
            )
            return EntryOutcome(200, write=result)
        body = {**(entry.resource or {}), "id": entry.target_id}
        result = await resources.update(
            entry.resource_type, entry.target_id, body, if_match=entry.if_match
        )
        return EntryOutcome(201 if result.created else 200, write=result)

    async def _read(self, entry: ParsedEntry, base_url: str) -> EntryOutcome:
        if entry.resource_id is None:
            pairs = parse_qsl(entry.query or "", keep_blank_values=True)
            result = await self._search.search(
                (entry.resource_type,), pairs, strict=False, base_url=base_url
            )
            return EntryOutcome(
                200, search=result, search_pairs=pairs, search_path=f"/{entry.resource_type}"
            )
        if entry.version_id is not None:
            version = await self._resources.vread(
                entry.resource_type, entry.resource_id, entry.version_id
            )
        else:
            version = await self._resources.read(entry.resource_type, entry.resource_id)
        return EntryOutcome(200, read=version)

    # -- batch -----------------------------------------------------------------------------

    async def _batch(self, raw_entries: list[Any], base_url: str) -> list[EntryOutcome]:
        """Each entry on its own: the writes in groups (``_batch_group``), then the reads,
        several at once, so that a read sees the batch's writes (as in a transaction)."""
        outcomes: dict[int, EntryOutcome] = {}
        writes: list[ParsedEntry] = []
        reads: list[ParsedEntry] = []
        for index, raw in enumerate(raw_entries):
            try:
                entry = parse_entry(index, raw, base_url)
            except FhirError as error:
                outcomes[index] = EntryOutcome(error.status, error=error)
                continue
            (reads if entry.method in ("GET", "HEAD") else writes).append(entry)
        groups_gate = asyncio.Semaphore(BATCH_GROUPS_AT_ONCE)
        reads_gate = asyncio.Semaphore(BATCH_CONCURRENCY)
        failed = asyncio.Event()  # a group's commit failed: the rest run one by one

        async def group(entries: list[ParsedEntry]) -> dict[int, EntryOutcome]:
            async with groups_gate:
                return await self._batch_group(entries, base_url, failed)

        async def read(entry: ParsedEntry) -> EntryOutcome:
            async with reads_gate:
                return await self._batch_single(entry, base_url)

        async with self._resources.search_parameters_refreshed():
            for done in await asyncio.gather(*(group(g) for g in _groups(writes))):
                outcomes.update(done)
            answers = await asyncio.gather(*(read(entry) for entry in reads))
            outcomes.update(zip((entry.index for entry in reads), answers, strict=True))
        return [outcomes[index] for index in range(len(raw_entries))]

    async def _batch_group(
        self, entries: list[ParsedEntry], base_url: str, failed: asyncio.Event
    ) -> dict[int, EntryOutcome]:
        """Batch writes staged one by one and committed at once, with one AuditEvent naming
        them all (as a transaction's): a commit and an AuditEvent each cost an entry ~40 %
        of its CPU. The entries stay independent: each is decided and checked on its own
        and a failing one answers its own error, the others going on. When the commit
        fails (a resource changed since it was staged, a claim or guard of a hospital rule,
        a condition that now matches), nothing of the group was written, and its entries
        run again one by one (``_batch_single``), as a batch always ran them; so do the
        groups after it (``failed``): a batch sent again, its conditional creates matching
        what it created the first time, would otherwise stage every group in vain. Their
        keys (``_lock_key``) differ (``_groups``) and are held in one order until the
        commit."""
        outcomes: dict[int, EntryOutcome] = {}
        alone: list[ParsedEntry] = []
        if len(entries) == 1 or failed.is_set():
            return await self._one_by_one(entries, base_url)
        keys = sorted(key for entry in entries if (key := _lock_key(entry)) is not None)
        async with AsyncExitStack() as held:
            for key in keys:
                await held.enter_async_context(self._locks.hold(key))
            stage, token = start_stage()
            try:
                for entry in entries:
                    fresh = copy.copy(entry)
                    try:
                        outcomes[entry.index] = await _at_entry(
                            fresh, self._decide_and_write(fresh)
                        )
                    except FhirError as error:
                        if error.rofecare_code == ONE_WRITE_PER_RESOURCE:
                            alone.append(entry)  # another entry of the group writes it
                        else:
                            outcomes[entry.index] = EntryOutcome(error.status, error=error)
                await self._resources.commit_stage(stage, interaction="batch")
            except (VersionConflict, FhirError):
                failed.set()
                outcomes, alone = {}, entries  # nothing was written: each on its own
            finally:
                end_stage(token)
        outcomes.update(await self._one_by_one(alone, base_url))
        return outcomes

    async def _one_by_one(
        self, entries: list[ParsedEntry], base_url: str
    ) -> dict[int, EntryOutcome]:
        """Each entry on its own commit, several at once (their commits are grouped by the
        store, not their AuditEvents)."""
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def single(entry: ParsedEntry) -> EntryOutcome:
            async with gate:
                return await self._batch_single(entry, base_url)

        answers = await asyncio.gather(*(single(entry) for entry in entries))
        return dict(zip((entry.index for entry in entries), answers, strict=True))

    async def _batch_single(self, entry: ParsedEntry, base_url: str) -> EntryOutcome:
        """One batch entry on its own: its answer, or its error."""
        try:
            return await _at_entry(entry, self._batch_entry(copy.copy(entry), base_url))
        except FhirError as error:
            return EntryOutcome(error.status, error=error)

    async def _batch_entry(self, entry: ParsedEntry, base_url: str) -> EntryOutcome:
        if entry.method in ("GET", "HEAD"):
            return await self._read(entry, base_url)
        key = _lock_key(entry)
        async with AsyncExitStack() as held:
            if key is not None:  # from the decision to the write: no twin slips in between
                await held.enter_async_context(self._locks.hold(key))
            return await self._decide_and_write(entry)

    async def _decide_and_write(self, entry: ParsedEntry) -> EntryOutcome:
        """A batch write: its target, its references, then the write (the caller holds the
        entry's key)."""
        targets: dict[str, str] = {}
        if entry.conditional and entry.method == "POST":
            # A conditional create on its own is the service's: one search, then the
            # write, which the store checks again (searching here as well doubled it).
            entry.criteria = entry.if_none_exist
            entry.target_id = new_id()
        elif entry.conditional:
            await self._decide_conditional(entry, targets)
        else:
            entry.target_id = new_id() if entry.method == "POST" else entry.resource_id
        conditionals = await self._resolve_conditional_references([entry], targets)
        if entry.resource is not None:
            entry.resource = _rewritten(entry, targets, conditionals)
        return await self._write(entry)


# -- parsing -------------------------------------------------------------------------------------


def parse_entry(index: int, raw: Any, base_url: str) -> ParsedEntry:
    """``Bundle.entry[index]`` taken apart; a 400 naming the entry when it cannot be run."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise _entry_error(where, "An entry must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise _entry_error(f"{where}.request", "The entry has no request")
    method = request.get("method")
    if method not in METHODS:
        raise _entry_error(
            f"{where}.request.method", f"Unsupported method {str(method)[:20]!r}"
        )  # fmt: skip
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise _entry_error(f"{where}.request.url", "The entry's request has no url")
    relative = _relative(url.strip(), base_url, f"{where}.request.url")
    path, mark, query = relative.partition("?")
    parts = [part for part in path.split("/") if part]
    resource = raw.get("resource")
    full_url = raw.get("fullUrl")
    entry = ParsedEntry(
        index=index,
        method=method,
        url=url,
        resource_type=parts[0] if parts else "",
        query=query if mark else None,
        resource=resource if isinstance(resource, dict) else None,
        full_url=full_url if isinstance(full_url, str) and full_url else None,
    )
    _check_shape(entry, parts, where)
    if_match = request.get("ifMatch")
    if if_match is not None:
        entry.if_match = parse_etag(if_match) if isinstance(if_match, str) else None
        if entry.if_match is None:
            raise _entry_error(f"{where}.request.ifMatch", 'ifMatch is not an ETag (W/"n")')
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        if method != "POST" or not isinstance(if_none_exist, str) or not if_none_exist:
            raise _entry_error(
                f"{where}.request.ifNoneExist", "ifNoneExist is a search query for a POST"
            )
        entry.if_none_exist = if_none_exist
    return entry


def _relative(url: str, base_url: str, where: str) -> str:
    if url.startswith(("http://", "https://")):
        if not url.startswith(base_url + "/"):
            raise _entry_error(where, f"{url[:80]!r} is not on this server's base {base_url}")
        return url[len(base_url) + 1 :]
    return url.lstrip("/")


def _check_shape(entry: ParsedEntry, parts: list[str], where: str) -> None:
    """The url fits the method (http.html#transaction); the resource fits the url."""
    method, url_where = entry.method, f"{where}.request.url"
    if not parts or not parts[0][:1].isupper():
        raise _entry_error(url_where, f"{entry.url[:80]!r} names no resource type")
    if len(parts) >= 2:
        entry.resource_id = parts[1]
        if not is_valid_id(parts[1]):
            raise _entry_error(url_where, f"Invalid id {parts[1][:70]!r}")
    if len(parts) == 4 and parts[2] == "_history" and method in ("GET", "HEAD"):
        entry.version_id = parts[3]
    elif len(parts) > 2:
        raise _entry_error(url_where, f"{entry.url[:80]!r} is not a {method} url")
    if method == "POST" and (len(parts) != 1 or entry.query is not None):
        raise _entry_error(url_where, "A POST entry's url is the resource type")
    if method in ("PUT", "PATCH", "DELETE") and (len(parts) == 2) == (entry.query is not None):
        raise _entry_error(
            url_where, f"A {method} entry's url is Type/id or a conditional Type?query"
        )
    if method in ("GET", "HEAD") and entry.query is not None and len(parts) != 1:
        raise _entry_error(url_where, "A search url is Type?query")
    if method in ("POST", "PUT"):
        if entry.resource is None:
            raise _entry_error(f"{where}.resource", f"A {method} entry needs a resource")
        kind = entry.resource.get("resourceType")
        if kind != entry.resource_type:
            raise _entry_error(
                f"{where}.resource.resourceType",
                f"The resource is a {str(kind)[:40]!r}, the url names {entry.resource_type!r}",
            )
        body_id = entry.resource.get("id")
        if method == "PUT" and entry.resource_id and body_id not in (None, entry.resource_id):
            raise _entry_error(
                f"{where}.resource.id",
                f"The resource id {str(body_id)[:70]!r} differs from the url's",
            )
    if method == "PATCH" and entry.resource is None:
        raise _entry_error(f"{where}.resource", "A PATCH entry needs a Binary JSON Patch")


def _json_patch(entry: ParsedEntry) -> Any:
    """A PATCH entry's operations: a Binary holding a JSON Patch (http.html#patch)."""
    where = f"Bundle.entry[{entry.index}].resource"
    resource = entry.resource or {}
    if resource.get("resourceType") != "Binary" or resource.get("contentType") != JSON_PATCH:
        raise _entry_error(where, f"A PATCH entry carries a Binary of contentType {JSON_PATCH}")
    try:
        return orjson.loads(base64.b64decode(str(resource.get("data", "")), validate=True))
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as error:
        raise _entry_error(f"{where}.data", "The Binary does not hold JSON (base64)") from error


def _check_unique_full_urls(entries: list[ParsedEntry]) -> None:
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        if entry.full_url in seen:
            raise _entry_error(
                f"Bundle.entry[{entry.index}].fullUrl",
                f"fullUrl {entry.full_url[:80]!r} is also entry {seen[entry.full_url]}'s",
                code="rofecare-2403",
            )
        seen[entry.full_url] = entry.index


def _entry_error(where: str, message: str, code: str = "rofecare-2402") -> BadRequest:
    return BadRequest(message, expression=where, rofecare_code=code)


# -- helpers -------------------------------------------------------------------------------------


def _groups(entries: list[ParsedEntry]) -> list[list[ParsedEntry]]:
    """Consecutive runs of at most ``BATCH_GROUP`` entries, none holding a key (a resource,
    a condition) another of its run holds: two writes deciding by one condition must see
    each other, so the second waits for the next group."""
    groups: list[list[ParsedEntry]] = []
    current: list[ParsedEntry] = []
    keys: set[tuple[str, ...]] = set()
    for entry in entries:
        key = _lock_key(entry)
        if len(current) == BATCH_GROUP or (key is not None and key in keys):
            groups.append(current)
            current, keys = [], set()
        current.append(entry)
        if key is not None:
            keys.add(key)
    if current:
        groups.append(current)
    return groups


def _lock_key(entry: ParsedEntry) -> tuple[str, ...] | None:
    """What concurrent bundles of this process queue on: the resource an entry writes by
    id, or the condition it decides by (two creates with one ifNoneExist must not both
    find nothing and both create)."""
    if entry.method not in WRITE_METHODS:
        return None
    if entry.conditional:
        return ("condition", entry.resource_type, entry.if_none_exist or entry.query or "")
    if entry.resource_id is not None:
        return ("resource", entry.resource_type, entry.resource_id)
    return None


def _add_target(targets: dict[str, str], entry: ParsedEntry) -> None:
    if entry.full_url and entry.target_id:
        targets[entry.full_url] = f"{entry.resource_type}/{entry.target_id}"


def _ready(entry: ParsedEntry, targets: dict[str, str], known_urls: set[str]) -> bool:
    criteria = entry.if_none_exist or entry.query or ""
    for url in mentioned_placeholders(criteria):
        if url not in known_urls:
            raise BadRequest(
                f"The condition names {url[:80]!r}, which is no entry's fullUrl",
                expression=f"Bundle.entry[{entry.index}].request",
                rofecare_code="rofecare-2405",
            )
        if url not in targets:
            return False
    return True


def _rewritten(
    entry: ParsedEntry, targets: dict[str, str], conditionals: dict[str, str]
) -> dict[str, Any]:
    def resolve(reference: str) -> str:
        return conditionals[reference]

    where = f"Bundle.entry[{entry.index}].resource"
    rewritten: dict[str, Any] = rewrite_references(entry.resource, targets, resolve, where)
    return rewritten


async def _at_entry(entry: ParsedEntry, work: Awaitable[T]) -> T:
    """Run ``work``; a fault it raises is re-raised naming the entry it came from."""
    try:
        return await work
    except FhirError as error:
        raise at_entry(error, entry) from error


def at_entry(error: FhirError, entry: ParsedEntry) -> FhirError:
    """``error`` with its diagnostics and expressions placed inside ``Bundle.entry[i]``."""
    prefix = f"Bundle.entry[{entry.index}]"
    if error.diagnostics.startswith(prefix):  # already placed
        return error
    located = copy.copy(error)
    located.issues = [
        replace(
            issue,
            diagnostics=f"{prefix} ({entry.method} {entry.url[:80]}): {issue.diagnostics}",
            expression=tuple(_inside(prefix, path) for path in issue.expression) or (prefix,),
        )
        for issue in error.issues
    ]
    located.diagnostics = located.issues[0].diagnostics
    return located


def _inside(prefix: str, path: str) -> str:
    if path.startswith("Bundle.entry["):
        return path
    head, dot, rest = path.partition(".")
    return f"{prefix}.resource" + (f".{rest}" if dot else "") if head[:1].isupper() else path
