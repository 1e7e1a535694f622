"""How the read audit of one flush becomes AuditEvents: every resource, patient and query
named, a resource read again named once, no event past its size, nothing truncated."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.auth.context import Access
from fhir_server.auth.scopes import ScopeSet
from fhir_server.definitions import load_definitions
from fhir_server.search.registry import load_search_parameters
from fhir_server.services import audit_trail
from fhir_server.services.audit_trail import AuditTrail, ReadAudit
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import StoredVersion
from fhir_server.storage.sqlite import SqliteStore

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def access(user: str) -> Access:
    return Access(
        subject=user,
        client_id="growth-chart",
        scopes=ScopeSet.parse("user/*.rs"),
        username=user,
        roles=("physician",),
    )


def patient(number: int) -> StoredVersion:
    body = {"resourceType": "Patient", "id": f"p{number}"}
    return StoredVersion("Patient", f"p{number}", 1, NOW, "PUT", orjson.dumps(body))


def observation(number: int, subject: int) -> StoredVersion:
    body = {
        "resourceType": "Observation",
        "id": f"o{number}",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/p{subject}"},
    }
    return StoredVersion("Observation", f"o{number}", 1, NOW, "PUT", orjson.dumps(body))


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> AuditTrail:
    definitions = load_definitions()
    index = SearchIndex(
        load_search_parameters(), definitions.is_resource_type, default_count=50, max_count=1000
    )
    store = SqliteStore(Path(tmp_path_factory.mktemp("trail")) / "unused.sqlite3")
    return AuditTrail(store, index)


def named(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        entity["what"]["reference"]
        for event in events
        for entity in event.get("entity", [])
        if "what" in entity
    )


def queries(events: list[dict[str, Any]]) -> list[str]:
    return [
        base64.b64decode(entity["query"]).decode()
        for event in events
        for entity in event.get("entity", [])
        if "query" in entity
    ]


def test_a_resource_read_again_in_one_flush_is_named_once(trail: AuditTrail) -> None:
    reader = access("drsmith")
    reads: list[ReadAudit | dict[str, Any]] = [
        ReadAudit(reader, "read", (patient(n % 7),), None, "10.0.0.7") for n in range(300)
    ]
    events = trail._events(reads)
    assert len(events) == 1  # 7 patients: one event
    assert named(events) == Counter({f"Patient/p{n}": 1 for n in range(7)})
    roles = {entity["role"]["code"] for entity in events[0]["entity"]}
    assert roles == {"1"}  # each Patient read is the patient entity itself


def test_each_requestor_and_kind_of_read_has_its_own_events(trail: AuditTrail) -> None:
    reads: list[ReadAudit | dict[str, Any]] = [
        ReadAudit(access("drsmith"), "read", (patient(1),), None, "10.0.0.7"),
        ReadAudit(access("nurse"), "read", (patient(1),), None, "10.0.0.8"),
        ReadAudit(access("drsmith"), "search-type", (patient(1),), "Patient?name=a", "10.0.0.7"),
    ]
    events = trail._events(reads)
    assert len(events) == 3
    assert named(events) == Counter({"Patient/p1": 3})


def test_a_long_flush_is_split_and_nothing_is_left_out(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_trail, "ENTITIES_PER_EVENT", 10)
    monkeypatch.setattr(audit_trail, "QUERIES_PER_EVENT", 4)
    reader = access("drsmith")
    page = tuple(observation(n, subject=n % 5) for n in range(25))  # one search, 25 results
    reads: list[ReadAudit | dict[str, Any]] = [
        ReadAudit(reader, "search-type", page, "Observation?code=weight", "10.0.0.7"),
        *(
            ReadAudit(reader, "search-type", (observation(n, 0),), f"Observation?_id=o{n}", None)
            for n in range(30, 40)
        ),
    ]
    # The address is part of the requestor: the last ten reads are a second group.
    events = trail._events(reads)
    expected = Counter(
        {f"Observation/o{n}": 1 for n in [*range(25), *range(30, 40)]}
        | {f"Patient/p{n}": 1 for n in range(5)}
    )
    expected["Patient/p0"] = 2  # named once in each group
    assert named(events) == expected
    assert sorted(queries(events)) == sorted(
        ["Observation?code=weight", *(f"Observation?_id=o{n}" for n in range(30, 40))]
    )
    for event in events:
        entities = [entity for entity in event["entity"] if "what" in entity]
        assert len(entities) <= 10 + 1  # a version and its patient may end an event
        assert len([entity for entity in event["entity"] if "query" in entity]) <= 4
        assert not any(entity.get("description") == "more not listed" for entity in event["entity"])


def test_the_events_of_one_flush_share_their_time_and_requestor(trail: AuditTrail) -> None:
    reader = access("drsmith")
    reads: list[ReadAudit | dict[str, Any]] = [
        ReadAudit(reader, "read", (patient(n),), None, "10.0.0.7")
        for n in range(3 * audit_trail.ENTITIES_PER_EVENT)
    ]
    events = trail._events(reads)
    assert len(events) == 3
    assert len({event["recorded"] for event in events}) == 1
    assert len({orjson.dumps(event["agent"]) for event in events}) == 1
