"""A stage holds a write and its companions all together or not at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.errors import BadRequest
from fhir_server.services.staging import ONE_WRITE_PER_RESOURCE, StagedWrites
from fhir_server.storage.base import WriteRecord


def record(resource_type: str, resource_id: str) -> WriteRecord:
    body = f'{{"resourceType":"{resource_type}","id":"{resource_id}"}}'.encode()
    return WriteRecord(resource_type, resource_id, 1, 0, datetime.now(UTC), "POST", body, ())


def test_a_write_whose_companion_is_staged_already_leaves_nothing() -> None:
    """A batch entry refused so runs again after its group: had its own record stayed in
    the group, it would be written twice."""
    stage = StagedWrites()
    stage.add(record("Observation", "a"), record("Flag", "shared"))
    with pytest.raises(BadRequest) as refused:
        stage.add(record("Observation", "b"), record("Flag", "shared"))
    assert refused.value.rofecare_code == ONE_WRITE_PER_RESOURCE
    assert [(r.resource_type, r.resource_id) for r in stage.records] == [
        ("Observation", "a"),
        ("Flag", "shared"),
    ]
    assert stage.version("Observation", "b") is None
    with pytest.raises(BadRequest):
        stage.add(record("Observation", "a"))
    assert stage.add(record("Observation", "c")).resource_id == "c"
