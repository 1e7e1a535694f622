"""The storage contract runs unchanged against every backend listed in ``BACKENDS``.

``mongodb-standin`` is the MongoDB store over an in-process STAND-IN for a server
(tests/contract/mongo_standin.py: mongomock behind PyMongo's async API), since no MongoDB
server installs here; ``mongodb`` is the same store over a real server, listed when
``ROFECARE_TEST_MONGODB_URI`` names one (a replica set: transactions need it). Two stores
made for one directory share one database, as two worker processes share one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import mongomock
import pytest
from pymongo import AsyncMongoClient

from fhir_server.storage.base import ResourceStore
from fhir_server.storage.mongo.store import DriverErrors, MongoStore
from fhir_server.storage.sqlite import SqliteStore
from tests.contract.mongo_standin import StandInClient, StandInUnavailable

StoreFactory = Callable[[Path], ResourceStore]

_STANDINS: dict[Path, StandInClient] = {}
STANDIN_ERRORS = DriverErrors(
    unavailable=(StandInUnavailable,),
    timeout=(TimeoutError,),
    duplicate=(mongomock.DuplicateKeyError,),
)


def standin_store(directory: Path) -> MongoStore:
    """A MongoDB store over the stand-in; one stand-in server per test directory."""
    client = _STANDINS.setdefault(directory, StandInClient())
    return MongoStore(client, "rofecare", errors=STANDIN_ERRORS)


def real_mongodb_store(directory: Path) -> MongoStore:
    """A MongoDB store over the server of ROFECARE_TEST_MONGODB_URI, one database per test."""
    database = "rofecare_test_" + hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return MongoStore(AsyncMongoClient(os.environ["ROFECARE_TEST_MONGODB_URI"]), database)


BACKENDS: dict[str, StoreFactory] = {
    "sqlite": lambda directory: SqliteStore(directory / "contract.sqlite3"),
    "mongodb-standin": standin_store,
}
if os.environ.get("ROFECARE_TEST_MONGODB_URI"):
    BACKENDS["mongodb"] = real_mongodb_store


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    factory: StoreFactory = BACKENDS[request.param]
    return factory


@pytest.fixture
async def store(store_factory: StoreFactory, tmp_path: Path) -> AsyncIterator[ResourceStore]:
    instance = store_factory(tmp_path)
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
