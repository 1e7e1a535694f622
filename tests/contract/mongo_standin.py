"""STAND-IN for a MongoDB server: mongomock's in-process query engine behind PyMongo's async API.

No MongoDB server can be installed on the machines CI runs on (issue 5), so the contract
suite runs the MongoDB store against this stand-in, and against a real server whenever
``ROFECARE_TEST_MONGODB_URI`` is set. What it proves: the store's documents, its filters
(``$elemMatch``, ``$nor``, ``$all``, keysets...), sorts, pipelines and the version checks
give the same answers as the SQLite store. What it cannot: real transactions (it runs
them one at a time and undoes a failed one's writes from a log, where a replica set takes
snapshots and aborts on write conflicts), index use (``explain()`` is checked only on a
real server), network failures and failover (``down`` makes every call fail as an
unreachable server does).

Only the calls the store makes are wrapped; an unexpected call fails loudly.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mongomock

T = TypeVar("T")


class StandInUnavailable(ConnectionError):
    """What every call raises while the stand-in is ``down`` (a lost connection)."""


class StandInClient:
    def __init__(self) -> None:
        self._sync = mongomock.MongoClient()
        self._lock = asyncio.Lock()
        self.down = False
        self.standalone = False  # answer "hello" as a mongod outside any replica set

    def __getitem__(self, name: str) -> StandInDatabase:
        return StandInDatabase(self, self._sync[name])

    def start_session(self) -> StandInSession:
        return StandInSession(self)

    async def close(self) -> None:
        """The client is shared by the stores of one test: closing one keeps the data."""

    def check(self) -> None:
        if self.down:
            raise StandInUnavailable("stand-in MongoDB is down")


class StandInDatabase:
    def __init__(self, client: StandInClient, sync: Any) -> None:
        self._client = client
        self._sync = sync

    def __getitem__(self, name: str) -> StandInCollection:
        return StandInCollection(self._client, self._sync[name])

    async def command(self, name: str) -> dict[str, Any]:
        self._client.check()
        if name != "hello":
            raise NotImplementedError(name)
        if self._client.standalone:
            return {"isWritablePrimary": True}
        return {"isWritablePrimary": True, "setName": "standin"}


class StandInSession:
    """Transactions one at a time (a lock), a failed one undone from its log."""

    def __init__(self, client: StandInClient) -> None:
        self._client = client
        self.undo: list[Callable[[], None]] | None = None

    async def __aenter__(self) -> StandInSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def with_transaction(self, work: Callable[[StandInSession], Awaitable[T]]) -> T:
        async with self._client._lock:
            self._client.check()
            self.undo = []
            try:
                return await work(self)
            except BaseException:
                for step in reversed(self.undo):
                    step()
                raise
            finally:
                self.undo = None


class _Result:
    def __init__(self, matched_count: int, upserted_id: Any = None) -> None:
        self.matched_count = matched_count
        self.upserted_id = upserted_id


class _Cursor:
    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self._documents = iter(documents)

    def __aiter__(self) -> _Cursor:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return next(self._documents)
        except StopIteration:
            raise StopAsyncIteration from None


class StandInCollection:
    def __init__(self, client: StandInClient, sync: Any) -> None:
        self._client = client
        self._sync = sync

    def _log(self, session: StandInSession | None, step: Callable[[], None]) -> None:
        if session is not None and session.undo is not None:
            session.undo.append(step)

    def _restore(self, session: StandInSession | None, before: dict[str, Any] | None) -> None:
        if before is not None:
            key, old = before["_id"], copy.deepcopy(before)
            self._log(session, lambda: self._sync.replace_one({"_id": key}, old))

    async def create_index(self, keys: list[tuple[str, Any]], **options: Any) -> str:
        self._client.check()
        return str(self._sync.create_index(keys, **options))

    async def find_one(
        self,
        condition: dict[str, Any],
        projection: dict[str, Any] | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        session: StandInSession | None = None,
    ) -> dict[str, Any] | None:
        self._client.check()
        found: dict[str, Any] | None = self._sync.find_one(condition, projection, sort=sort)
        return found

    def find(
        self,
        condition: dict[str, Any],
        projection: dict[str, Any] | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        session: StandInSession | None = None,
        max_time_ms: int | None = None,
    ) -> _Cursor:
        self._client.check()
        cursor = self._sync.find(condition, projection or None)
        if sort:
            cursor = cursor.sort(sort)
        if limit:
            cursor = cursor.limit(limit)
        return _Cursor(list(cursor))

    async def count_documents(
        self,
        condition: dict[str, Any],
        *,
        limit: int | None = None,
        session: StandInSession | None = None,
        maxTimeMS: int | None = None,  # noqa: N803 - PyMongo's spelling
    ) -> int:
        self._client.check()
        options = {"limit": limit} if limit else {}
        return int(self._sync.count_documents(condition, **options))

    async def aggregate(
        self,
        pipeline: list[dict[str, Any]],
        *,
        session: StandInSession | None = None,
        maxTimeMS: int | None = None,  # noqa: N803 - PyMongo's spelling
    ) -> _Cursor:
        self._client.check()
        return _Cursor(list(self._sync.aggregate(pipeline)))

    async def insert_one(
        self, document: dict[str, Any], *, session: StandInSession | None = None
    ) -> None:
        self._client.check()
        self._sync.insert_one(copy.deepcopy(document))
        key = document["_id"]
        self._log(session, lambda: self._sync.delete_one({"_id": key}))

    async def insert_many(
        self,
        documents: list[dict[str, Any]],
        *,
        ordered: bool = True,
        session: StandInSession | None = None,
    ) -> None:
        for document in documents:
            await self.insert_one(document, session=session)

    async def replace_one(
        self,
        condition: dict[str, Any],
        document: dict[str, Any],
        *,
        session: StandInSession | None = None,
    ) -> _Result:
        self._client.check()
        before = self._sync.find_one(condition)
        result = self._sync.replace_one(condition, copy.deepcopy(document))
        self._restore(session, before)
        return _Result(result.matched_count)

    async def update_one(
        self,
        condition: dict[str, Any],
        update: dict[str, Any],
        *,
        upsert: bool = False,
        session: StandInSession | None = None,
    ) -> _Result:
        self._client.check()
        before = self._sync.find_one(condition)
        result = self._sync.update_one(condition, update, upsert=upsert)
        self._restore(session, before)
        if result.upserted_id is not None:
            key = result.upserted_id
            self._log(session, lambda: self._sync.delete_one({"_id": key}))
        return _Result(result.matched_count, result.upserted_id)

    async def find_one_and_update(
        self,
        condition: dict[str, Any],
        update: dict[str, Any],
        *,
        upsert: bool = False,
        return_document: bool = False,
        session: StandInSession | None = None,
    ) -> dict[str, Any] | None:
        self._client.check()
        before = self._sync.find_one(condition)
        found: dict[str, Any] | None = self._sync.find_one_and_update(
            condition, update, upsert=upsert, return_document=return_document
        )
        if before is not None:
            self._restore(session, before)
        elif found is not None:
            key = found["_id"]
            self._log(session, lambda: self._sync.delete_one({"_id": key}))
        return found

    # -- for the identity store (fhir_server/auth/mongo_identity.py) --------------------------

    def _log_reinsert(self, session: StandInSession | None, document: dict[str, Any]) -> None:
        old = copy.deepcopy(document)
        self._log(session, lambda: self._sync.insert_one(old))

    async def update_many(
        self,
        condition: dict[str, Any],
        update: dict[str, Any],
        *,
        session: StandInSession | None = None,
    ) -> _Result:
        self._client.check()
        before = list(self._sync.find(condition))
        result = self._sync.update_many(condition, update)
        for document in before:
            self._restore(session, document)
        return _Result(result.matched_count)

    async def delete_many(
        self, condition: dict[str, Any], *, session: StandInSession | None = None
    ) -> None:
        self._client.check()
        before = list(self._sync.find(condition))
        self._sync.delete_many(condition)
        for document in before:
            self._log_reinsert(session, document)

    async def find_one_and_delete(
        self, condition: dict[str, Any], *, session: StandInSession | None = None
    ) -> dict[str, Any] | None:
        self._client.check()
        found: dict[str, Any] | None = self._sync.find_one_and_delete(condition)
        if found is not None:
            self._log_reinsert(session, found)
        return found
