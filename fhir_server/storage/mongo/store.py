"""MongoDB implementation of ``ResourceStore``, for several server workers on one database.

Why these choices:

- **One transaction per ``write``.** A write's records (one resource, or a whole transaction
  Bundle) go in one multi-document transaction on the replica set, so a failure anywhere
  leaves nothing. ``with_transaction`` retries the callback on ``TransientTransactionError``
  (two workers wrote the same document), and the retry re-reads the versions, so a lost
  update surfaces as ``VersionConflict``, never silently. A standalone ``mongod`` has no
  transactions: Rofecare needs a replica set (a one-member set is enough).
- **Optimistic versions.** An update replaces the current document only where ``v`` is
  still the version it was prepared against; a create inserts ``_id`` type/id, which a
  concurrent create of the same id cannot also insert.
- **One sequence.** Versions are numbered by a counter document incremented in the write's
  transaction: the system history's order and cursor, and ``latest_change``. Every write
  touches it, so concurrent writers conflict and retry there: MongoDB serializes writes as
  SQLite does. Enough for a hospital network's write rate; a sharded cluster scales reads
  and search (docs/deployment.md).
- **Conditional creates across workers.** The condition's search runs in the transaction,
  and the transaction also writes a document named by the condition: two workers creating
  under one condition conflict on it, and the retry finds the other's resource.
- **Unreachable database: 503.** Connection and selection errors answer 503 with
  Retry-After, and the driver's retryable writes and reads are on (its defaults).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson
from pymongo import AsyncMongoClient, errors

from fhir_server.errors import SearchTooLong, StoreUnavailable
from fhir_server.model.instant import to_micros
from fhir_server.search.plan import SearchPlan
from fhir_server.storage.base import (
    Claim,
    ConditionMatched,
    CurrentPage,
    GuardViolated,
    HistoryPage,
    HistoryQuery,
    IndexOf,
    IndexRecord,
    SearchPage,
    StoredVersion,
    VersionConflict,
    WriteGuard,
    WriteRecord,
)
from fhir_server.storage.mongo.documents import (
    current_document,
    current_id,
    search_fields,
    stored_version,
    version_document,
    version_id,
)
from fhir_server.storage.mongo.indexes import CURRENT_INDEXES, VERSION_INDEXES
from fhir_server.storage.mongo.search import MongoSearch

T = TypeVar("T")
log = logging.getLogger("rofecare.storage")

RETRY_AFTER_SECONDS = "5"
SEQUENCE_ID = "seq"
SERVER_SELECTION_MS = 5_000
DEFAULT_DATABASE = "rofecare"


class StoreMisconfigured(RuntimeError):
    """The configured database cannot serve Rofecare (said at start-up, not per request)."""


class MongoStore:
    """The store over a database of ``client`` (``AsyncMongoClient`` or a stand-in)."""

    def __init__(
        self,
        client: Any,
        database: str,
        *,
        search_timeout: float = 10.0,
        errors: DriverErrors | None = None,
        owns_client: bool = True,
    ) -> None:
        self._client = client
        self._db = client[database]
        self._versions = self._db["versions"]
        self._current = self._db["current"]
        self._counters = self._db["counters"]
        self._conditions = self._db["conditions"]
        self._search_timeout_ms = max(1, int(search_timeout * 1000))
        self._errors = errors or pymongo_errors()
        self._owns_client = owns_client
        self._index_of: IndexOf | None = None

    @classmethod
    def connect(
        cls,
        uri: str,
        *,
        search_timeout: float = 10.0,
        server_selection_ms: int = SERVER_SELECTION_MS,
    ) -> MongoStore:
        """The store over ``uri``'s database ("rofecare" when the URI names none).

        Retryable writes and reads are the driver's defaults and stay on; a server not found
        within ``server_selection_ms`` fails the request with a 503 instead of hanging it."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=server_selection_ms, retryWrites=True, retryReads=True
        )
        # From the URI's path: pymongo's parse_uri would resolve a mongodb+srv name (DNS).
        database = unquote(urlsplit(uri).path.lstrip("/")) or DEFAULT_DATABASE
        return cls(client, database, search_timeout=search_timeout)

    # -- lifecycle -------------------------------------------------------------------------

    def index_with(self, index_of: IndexOf) -> None:
        self._index_of = index_of

    async def open(self) -> None:
        """Check that the server can run transactions, then create the indexes (idempotent:
        every worker does it at start-up)."""
        hello = await self._guard(self._db.command("hello"))
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise StoreMisconfigured(
                "The MongoDB server is a standalone mongod: Rofecare needs a replica set "
                "(transactions), even of one member; see docs/deployment.md"
            )
        for keys, options in VERSION_INDEXES:
            await self._guard(self._versions.create_index(keys, **options))
        for keys, options in CURRENT_INDEXES:
            await self._guard(self._current.create_index(keys, **options))

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    # -- reads -----------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        document = await self._guard(
            self._current.find_one({"_id": current_id(resource_type, resource_id)})
        )
        return stored_version(document) if document else None

    async def vread(
        self, resource_type: str, resource_id: str, version_id_: int
    ) -> StoredVersion | None:
        key = version_id(resource_type, resource_id, version_id_)
        document = await self._guard(self._versions.find_one({"_id": key}))
        return stored_version(document) if document else None

    async def latest_change(self, resource_type: str) -> int:
        document = await self._guard(
            self._versions.find_one({"t": resource_type}, {"seq": 1}, sort=[("seq", -1)])
        )
        return int(document["seq"]) if document else 0

    async def history(self, query: HistoryQuery) -> HistoryPage:
        condition: dict[str, Any] = {}
        if query.resource_type is not None:
            condition["t"] = query.resource_type
        if query.resource_id is not None:
            condition["i"] = query.resource_id
        bounds: dict[str, int] = {}
        if query.since is not None:
            bounds["$gte"] = to_micros(query.since)
        if query.at is not None:
            bounds["$lt"] = to_micros(query.at[1])
        if bounds:
            condition["lu"] = bounds
        if query.cursor is not None:
            condition["seq"] = {"$lte": query.cursor}
        found: list[dict[str, Any]] = []
        async for document in self._versions.find(condition, sort=[("seq", -1)]):
            if query.at is not None and await self._replaced_before(document, query.at[0]):
                continue
            found.append(document)
            if len(found) > query.count:
                break
        next_cursor = int(found[query.count]["seq"]) if len(found) > query.count else None
        versions = [stored_version(document) for document in found[: query.count]]
        return HistoryPage(versions, next_cursor)

    async def _replaced_before(self, document: dict[str, Any], start: Any) -> bool:
        """``_at``: the version's successor was written at or before the period began."""
        successor = await self._versions.find_one(
            {"_id": version_id(document["t"], document["i"], int(document["v"]) + 1)}, {"lu": 1}
        )
        return successor is not None and int(successor["lu"]) <= to_micros(start)

    async def search(self, plan: SearchPlan) -> SearchPage:
        search = MongoSearch(self._current, max_time_ms=self._search_timeout_ms)
        try:
            return await self._guard(search.run(plan))
        except self._errors.timeout:
            raise SearchTooLong(
                f"The search ran longer than {self._search_timeout_ms / 1000:g} s and was "
                "stopped; narrow it with more selective parameters",
                rofecare_code="rofecare-2120",
            ) from None

    async def current(self, cursor: int | None, limit: int) -> CurrentPage:
        documents = [
            document
            async for document in self._current.find(
                {"del": False, "k": {"$gt": cursor or 0}}, sort=[("k", 1)], limit=limit
            )
        ]
        next_cursor = int(documents[-1]["k"]) if len(documents) == limit else None
        return CurrentPage([stored_version(document) for document in documents], next_cursor)

    # -- writes ----------------------------------------------------------------------------

    async def write(self, records: Sequence[WriteRecord]) -> None:
        if records:
            indexed = [self._indexed(record) for record in records]
            await self._transaction(lambda session: self._write(session, indexed))

    def _indexed(self, record: WriteRecord) -> WriteRecord:
        """``record`` with its entries, computed now when it is to be indexed later: a
        document carries its search fields from its first write (no log to apply)."""
        if not record.index_later or record.body is None:
            return record
        if self._index_of is None:
            raise RuntimeError("a record to index later, and no index_with function given")
        entries, text = self._index_of(orjson.loads(record.body))
        return replace(record, entries=tuple(entries), full_text=text, index_later=False)

    async def _write(self, session: Any, records: Sequence[WriteRecord]) -> None:
        keys = [current_id(record.resource_type, record.resource_id) for record in records]
        found = {
            document["_id"]: document
            async for document in self._current.find(
                {"_id": {"$in": keys}}, {"v": 1, "k": 1, "cl": 1}, session=session
            )
        }
        for record in records:
            if record.unless_exists is not None:
                await self._check_condition(session, record)
            for guard in record.guards:
                await self._check_guard(session, record, guard, set(keys))
            for claim in record.enforced:
                await self._check_claim(session, record, claim, records, keys)
        last = await self._counters.find_one_and_update(
            {"_id": SEQUENCE_ID},
            {"$inc": {"n": len(records)}},
            upsert=True,
            return_document=True,
            session=session,
        )
        seq = int(last["n"]) - len(records)
        staged: dict[str, tuple[int, int]] = {
            key: (int(document["v"]), int(document["k"])) for key, document in found.items()
        }
        versions: list[dict[str, Any]] = []
        for key, record in zip(keys, records, strict=True):
            seq += 1
            current_version, creation_key = staged.get(key, (0, seq))
            if current_version != record.previous_version or record.version_id != (
                current_version + 1
            ):
                raise VersionConflict(
                    record.resource_type, record.resource_id, current_version or None
                )
            staged[key] = (record.version_id, creation_key)
            versions.append(version_document(record, seq))
            document = current_document(record, seq, creation_key)
            kept = found.get(key, {}).get("cl")
            if record.claims is None and kept and not record.deleted:
                document["cl"] = kept  # a record that says nothing of claims keeps them
            if current_version == 0:
                try:
                    await self._current.insert_one(document, session=session)
                except self._errors.duplicate:  # created meanwhile by another worker
                    raise VersionConflict(record.resource_type, record.resource_id, None) from None
            else:
                result = await self._current.replace_one(
                    {"_id": key, "v": current_version}, document, session=session
                )
                if result.matched_count != 1:
                    raise VersionConflict(record.resource_type, record.resource_id, None)
        await self._versions.insert_many(versions, ordered=True, session=session)

    async def _check_condition(self, session: Any, record: WriteRecord) -> None:
        plan = record.unless_exists
        assert plan is not None
        # Writing the condition's own document makes two transactions creating under one
        # condition conflict, so the second retries and then finds the first's resource.
        await self._conditions.update_one(
            {"_id": _condition_key(plan)}, {"$inc": {"n": 1}}, upsert=True, session=session
        )
        search = MongoSearch(self._current, session=session)
        condition = await search.condition(replace(plan, count=1, total="none"))
        if await self._current.find_one(condition, {"_id": 1}, session=session):
            raise ConditionMatched(record.resource_type, record.resource_id)

    async def _check_guard(
        self, session: Any, record: WriteRecord, guard: WriteGuard, written: set[str]
    ) -> None:
        # The lock document makes two transactions under one guard conflict (the second
        # retries and then sees the first's resource), whatever their plans.
        await self._conditions.update_one(
            {"_id": f"guard:{guard.lock}"}, {"$inc": {"n": 1}}, upsert=True, session=session
        )
        search = MongoSearch(self._current, session=session)
        condition = await search.condition(replace(guard.plan, count=1, total="none"))
        limit = len(written) + len(guard.tolerated) + 1
        cursor = self._current.find(condition, {"_id": 1, "v": 1}, limit=limit, session=session)
        async for document in cursor:
            key = document["_id"]
            resource_type, _, resource_id = key.partition("/")
            if key not in written and guard.counts(resource_type, resource_id, int(document["v"])):
                raise GuardViolated(guard, record.resource_type, record.resource_id)

    async def _check_claim(
        self,
        session: Any,
        record: WriteRecord,
        claim: Claim,
        records: Sequence[WriteRecord],
        keys: list[str],
    ) -> None:
        # As for a guard, the lock document makes two transactions claiming one key
        # conflict; the second retries and then sees the first's claim.
        await self._conditions.update_one(
            {"_id": f"claim:{claim.key}"}, {"$inc": {"n": 1}}, upsert=True, session=session
        )
        held = await self._current.find_one(
            {"cl": claim.key, "del": False, "_id": {"$nin": keys}}, {"_id": 1}, session=session
        )
        twice = any(
            other is not record and not other.deleted and claim.key in (other.claims or ())
            for other in records
        )
        if held is not None or twice:
            raise GuardViolated(claim, record.resource_type, record.resource_id)

    async def claimants(self, keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        if not keys:
            return {}
        found: dict[str, list[tuple[str, str]]] = {}
        cursor = self._current.find(
            {"cl": {"$in": sorted(set(keys))}, "del": False},
            {"t": 1, "i": 1, "cl": 1},
            sort=[("k", 1)],
        )

        async def collect() -> None:
            async for document in cursor:
                for key in document.get("cl") or ():
                    if key in keys:
                        found.setdefault(key, []).append((document["t"], document["i"]))

        await self._guard(collect())
        return found

    async def replace_index(self, records: Sequence[IndexRecord]) -> int:
        async def run(session: Any) -> int:
            replaced = 0
            for record in records:
                fields = search_fields(record.entries, record.full_text)
                if record.claims is not None:
                    fields["cl"] = list(record.claims)
                result = await self._current.update_one(
                    {
                        "_id": current_id(record.resource_type, record.resource_id),
                        "v": record.version_id,
                        "del": False,
                    },
                    _replacing(fields),
                    session=session,
                )
                replaced += result.matched_count
            return replaced

        return await self._transaction(run)

    async def _transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        async def run() -> T:
            async with self._client.start_session() as session:
                result: T = await session.with_transaction(work)
                return result

        return await self._guard(run())

    # -- maintenance -----------------------------------------------------------------------

    async def check(self) -> list[str]:
        newest: dict[str, int] = {}
        counts: dict[str, int] = {}
        async for document in self._versions.find({}, {"t": 1, "i": 1, "v": 1}):
            key = current_id(document["t"], document["i"])
            newest[key] = max(newest.get(key, 0), int(document["v"]))
            counts[key] = counts.get(key, 0) + 1
        problems: list[str] = []
        current: set[str] = set()
        async for document in self._current.find({}, {"v": 1}):
            current.add(document["_id"])
            if newest.get(document["_id"]) != int(document["v"]):
                problems.append(
                    f"{document['_id']}: current version {document['v']} is not the newest "
                    f"{newest.get(document['_id'])}"
                )
        problems += [
            f"{key}: versions are not 1..{newest[key]}"
            for key in newest
            if counts[key] != newest[key]
        ]
        problems += [
            f"{key}: has versions but no current pointer" for key in newest if key not in current
        ]
        return problems

    async def _guard(self, pending: Awaitable[T]) -> T:
        """An unreachable database answers 503 with Retry-After, not 500."""
        try:
            return await pending
        except self._errors.unavailable as error:
            log.warning("MongoDB store unavailable: %s", type(error).__name__)
            raise StoreUnavailable(
                "The database is unreachable or failing over; retry shortly",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ) from error


_SEARCH_FIELDS = ("tok", "str", "dt", "num", "qty", "ref", "uri", "cmp", "sk", "ftn", "ftc")


def _replacing(fields: dict[str, Any]) -> dict[str, Any]:
    """The update setting a resource's search fields and removing those it no longer has."""
    update: dict[str, Any] = {"$set": fields}
    stale = {name: "" for name in _SEARCH_FIELDS if name not in fields}
    if stale:
        update["$unset"] = stale
    return update


def _condition_key(plan: SearchPlan) -> str:
    """One document per condition (types and criteria), whatever the record's id."""
    text = orjson.dumps([plan.resource_types, repr(plan.where)])
    return hashlib.sha256(text).hexdigest()


@dataclass(frozen=True)
class DriverErrors:
    """The client's exceptions for: the server unreachable (503), a query past its time
    limit, a duplicate ``_id`` (a concurrent create of the same resource)."""

    unavailable: tuple[type[BaseException], ...]
    timeout: tuple[type[BaseException], ...]
    duplicate: tuple[type[BaseException], ...]


def pymongo_errors() -> DriverErrors:
    """PyMongo's."""
    return DriverErrors(
        unavailable=(errors.ConnectionFailure,),  # includes selection timeouts, failover
        timeout=(errors.ExecutionTimeout,),
        duplicate=(errors.DuplicateKeyError,),
    )
