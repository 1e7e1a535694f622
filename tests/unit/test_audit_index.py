"""The composed index of the server's AuditEvents equals the generic indexer's."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.auth.context import Access
from fhir_server.auth.scopes import ScopeSet
from fhir_server.definitions import load_definitions
from fhir_server.events.audit import Entity, login_event, rest_event
from fhir_server.search.indexer import words
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.audit_index import AuditEventIndexer
from fhir_server.services.search_index import SearchIndex

ACCESS = Access(
    subject="u1",
    client_id="growth-chart",
    scopes=ScopeSet.parse("user/*.rs"),
    username="drsmith",
    fhir_user="Practitioner/dr1",
    roles=("physician",),
)


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    definitions = load_definitions()
    return SearchIndex(
        load_search_parameters(), definitions.is_resource_type, default_count=50, max_count=1000
    )


def _events() -> list[dict[str, Any]]:
    entities = [
        Entity("Patient/p1", is_patient=True),
        Entity("Observation/o1"),
        Entity("Patient/p2", is_patient=True),
        Entity("Encounter/e1"),
        Entity("Observation/o1"),  # read twice: named once
        Entity("Patient/Éloïse-3", is_patient=True),
    ]
    return [
        rest_event(
            access=ACCESS,
            interaction="search-type",
            action="E",
            recorded="2026-12-03T06:00:00.000Z",
            entities=entities,
            queries=["/Observation?subject=Patient/p1", "/Patient?name=smi"],
            source_ip="10.0.0.7",
        ),
        rest_event(
            access=None,
            interaction="transaction",
            action="E",
            recorded="2026-12-03T06:00:00.000Z",
            entities=[Entity(f"Observation/o{n}") for n in range(30)],
        ),
        rest_event(
            access=ACCESS,
            interaction="read",
            action="R",
            recorded="2026-12-03T06:00:00.000Z",
            entities=[Entity("Patient/p1", is_patient=True)],
        ),
        rest_event(  # the AuditEvent of a write: one entity, the server as agent
            access=None,
            interaction="create",
            action="C",
            recorded="2026-12-03T06:00:00.000Z",
            entities=[Entity("Practitioner/pr1")],
        ),
        login_event(
            username="drsmith",
            client_id="rofecare-console",
            fhir_user=None,
            recorded="2026-12-03T06:00:00.000Z",
            outcome="4",
            description="login refused: bad-password",
            source_ip="10.0.0.8",
        ),
    ]


@pytest.mark.parametrize("number", range(5))
def test_composed_entries_equal_the_generic_indexer(index: SearchIndex, number: int) -> None:
    event = {**_events()[number], "id": f"a{number}"}
    composer = AuditEventIndexer(index)
    for _ in range(2):  # cold, then from the cache
        entries, text = composer.entries(event)
        expected, expected_text = index.entries(event)
        assert set(entries) == set(expected)
        assert len(entries) == len(set(entries))  # no duplicates
        assert text is not None and expected_text is not None
        assert set(words(text.content)) == set(words(expected_text.content))
        assert text.narrative == expected_text.narrative


def test_the_cache_follows_search_parameter_changes(index: SearchIndex) -> None:
    composer = AuditEventIndexer(index)
    event = _events()[0]
    composer.entries(event)
    before = set(index.entries(event)[0])
    index.use_stored(  # a SearchParameter created at run time, over each entity
        [
            {
                "resourceType": "SearchParameter",
                "url": "http://rofecare.example/fhir/SearchParameter/entity-reference-text",
                "name": "entity-reference-text",
                "status": "active",
                "code": "entity-reference-text",
                "base": ["AuditEvent"],
                "type": "string",
                "expression": "AuditEvent.entity.what.reference",
            }
        ]
    )
    try:
        entries, _ = composer.entries(event)
        expected = set(index.entries(event)[0])
        assert expected - before  # the new parameter has entries
        assert set(entries) == expected
    finally:
        index.use_stored([])


def test_a_requestors_next_event_is_composed_from_the_remembered_parts(
    index: SearchIndex,
) -> None:
    """The second event shares agents, source and type with the first (remembered), and
    differs in id, time and entities: its entries are still the generic indexer's."""
    composer = AuditEventIndexer(index)
    first = {**_events()[0], "id": "first"}
    composer.entries(first)
    second = {
        **rest_event(
            access=ACCESS,
            interaction="search-type",
            action="E",
            recorded="2026-12-04T07:30:00.000Z",
            entities=[Entity("Patient/p9", is_patient=True), Entity("Observation/o1")],
            queries=["/Observation?code=8867-4"],
            source_ip="10.0.0.7",
        ),
        "id": "second",
        "meta": {"versionId": "1", "lastUpdated": "2026-12-04T07:30:00.001Z"},
    }
    entries, text = composer.entries(second)
    expected, expected_text = index.entries(second)
    assert set(entries) == set(expected)
    assert len(entries) == len(set(entries))
    assert text is not None and expected_text is not None
    assert set(words(text.content)) == set(words(expected_text.content))


def test_new_entities_are_composed_from_their_shape(index: SearchIndex) -> None:
    """Write events name resources the composer has not seen: each is composed from its
    shape (type, role) with its own id put in, which must give the generic indexer's
    entries, and not reuse another entity's id."""
    composer = AuditEventIndexer(index)
    ids = ["p1", "p.2", "P-3", "x" * 64, "Éloïse-4"]  # the last is no FHIR id: indexed whole
    for number, resource_id in enumerate(ids):
        event = {
            **rest_event(
                access=None,
                interaction="create",
                action="C",
                recorded="2026-12-03T06:00:00.000Z",
                entities=[
                    Entity(f"Observation/o{number}"),
                    Entity(f"Patient/{resource_id}", is_patient=True),
                ],
            ),
            "id": f"w{number}",
        }
        entries, text = composer.entries(event)
        expected, expected_text = index.entries(event)
        assert set(entries) == set(expected), resource_id
        assert text is not None and expected_text is not None
        assert set(words(text.content)) == set(words(expected_text.content))
