"""The common search shapes run on indexes in MongoDB: ``explain()``, not a stopwatch.

Runs only against a real server (``ROFECARE_TEST_MONGODB_URI``, a replica set): the
in-process stand-in has no query planner. For each shape the winning plan must read an
index (IXSCAN) and never the whole collection (COLLSCAN).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhir_server.definitions import load_definitions
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.mongo.search import MongoSearch
from tests.contract.conftest import real_mongodb_store

pytestmark = pytest.mark.skipif(
    not os.environ.get("ROFECARE_TEST_MONGODB_URI"),
    reason="needs a real MongoDB replica set: set ROFECARE_TEST_MONGODB_URI",
)

SHAPES = [
    ("Observation", "code=http://loinc.org|8867-4"),
    ("Patient", "name=smi"),
    ("Observation", "date=ge2020-01-01&date=lt2021-01-01"),
    ("Observation", "subject=Patient/p1"),
    ("Observation", "subject:Patient.name=smith"),
    ("Observation", "value-quantity=gt100|http://unitsofmeasure.org|/min"),
    ("Patient", "identifier=urn:mrn|17"),
]


def _stages(plan: dict[str, Any]) -> list[str]:
    found = [str(plan.get("stage"))]
    for key in ("inputStage", "queryPlan"):
        if isinstance(plan.get(key), dict):
            found += _stages(plan[key])
    for child in plan.get("inputStages", ()):
        found += _stages(child)
    return found


@pytest.mark.parametrize(("resource_type", "query"), SHAPES)
async def test_common_shapes_use_indexes(tmp_path: Path, resource_type: str, query: str) -> None:
    store = real_mongodb_store(tmp_path)
    await store.open()
    try:
        definitions = load_definitions()
        index = SearchIndex(load_search_parameters(), definitions.is_resource_type)
        parsed = index.parser.parse((resource_type,), parse_qsl(query), strict=True)
        condition = await MongoSearch(store._current).condition(parsed.plan)
        explained = await store._db.command(
            {"explain": {"find": "current", "filter": condition}, "verbosity": "queryPlanner"}
        )
        stages = _stages(explained["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in stages and "COLLSCAN" not in stages, stages
    finally:
        await store._client.drop_database(store._db.name)
        await store.close()
