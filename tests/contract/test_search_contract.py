"""The search contract: every case of ``search_cases`` against every backend.

Each case stores its fixtures through the real write path (validation, indexing) on a fresh
store of the backend under test, runs the search through the search service exactly as a
GET would (strict handling, so an unsupported parameter fails the case instead of being
ignored) and compares the ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from fhir_server.definitions import load_definitions
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.resources import ResourceService
from fhir_server.services.search import SearchService
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import ResourceStore
from fhir_server.validation.structure import StructureValidator
from tests.contract.conftest import StoreFactory
from tests.contract.search_cases import ALL_CASES, SearchCase

BASE_URL = "http://rofecare.test/fhir"


class Stack:
    def __init__(self, store: ResourceStore) -> None:
        definitions = load_definitions()
        index = SearchIndex(
            load_search_parameters(),
            definitions.is_resource_type,
            default_count=1000,
            max_count=1000,
        )
        validator = StructureValidator(definitions.resource_types, 64)
        self.resources = ResourceService(store, definitions, validator, index)
        self.search = SearchService(store, self.resources, index, definitions)


@pytest.fixture
async def stack(store_factory: StoreFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    store = store_factory(tmp_path)
    await store.open()
    try:
        yield Stack(store)
    finally:
        await store.close()


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.name for case in ALL_CASES])
async def test_search_case(stack: Stack, case: SearchCase) -> None:
    for fixture in case.fixtures:
        await stack.resources.update(fixture["resourceType"], fixture["id"], dict(fixture))
    pairs = parse_qsl(case.query, keep_blank_values=True)
    result = await stack.search.search((case.resource_type,), pairs, strict=True, base_url=BASE_URL)
    found = [version.resource_id for version in result.page.matches]
    if case.ordered:
        assert found == list(case.expected), case.note
    else:
        assert sorted(found) == sorted(case.expected), case.note
    assert result.page.total == len(case.expected)
