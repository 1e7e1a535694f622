"""The storage contract runs unchanged against every backend listed in ``BACKENDS``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fhir_server.storage.base import ResourceStore
from fhir_server.storage.sqlite import SqliteStore

StoreFactory = Callable[[Path], ResourceStore]

BACKENDS: dict[str, StoreFactory] = {
    "sqlite": lambda directory: SqliteStore(directory / "contract.sqlite3"),
}


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
