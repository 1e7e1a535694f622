"""``entry_match`` judges plans from a resource's own entries the way the index does: each
plan here runs through both, a real SQLite store and the matcher, on the same resources."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from fhir_server.search import entry_match
from fhir_server.search.plan import (
    Bound,
    IdMatch,
    RangeMatch,
    ReferenceMatch,
    SearchPlan,
    StringMatch,
    TokenMatch,
    Where,
)
from fhir_server.search.values import DateEntry, IndexEntry, StringEntry, TokenEntry
from fhir_server.storage.base import WriteRecord
from fhir_server.storage.sqlite import SqliteStore

RESOURCES: dict[str, tuple[IndexEntry, ...]] = {
    "a": (
        TokenEntry("identifier", "urn:mrn", "1"),
        TokenEntry("identifier:of-type", "urn:v2", "MR|1"),
        StringEntry("name", "muller", "Müller"),
        StringEntry("name", "anna", "Anna"),
    ),
    "b": (
        TokenEntry("identifier", None, "1"),
        TokenEntry("gender", None, "female"),
        StringEntry("name", "mulder", "Mulder"),
    ),
    "c": (
        TokenEntry("identifier", "urn:mrn", "2"),
        TokenEntry("identifier", "urn:other", "1"),
        DateEntry("birthdate", 0, 86_400_000_000),
    ),
    "d": (),
}

JUDGED: list[Where] = [
    ((TokenMatch("identifier", "urn:mrn", "1"),),),
    ((TokenMatch("identifier", None, "1"),),),
    ((TokenMatch("identifier", "", "1"),),),
    ((TokenMatch("identifier", "urn:mrn", None),),),
    ((TokenMatch("identifier", "urn:nothing", "1"),),),
    ((TokenMatch("identifier:of-type", "urn:v2", "MR|1"),),),
    ((TokenMatch("identifier", "urn:mrn", "1"), TokenMatch("identifier", "urn:mrn", "2")),),
    ((TokenMatch("identifier", None, "1"),), (TokenMatch("gender", None, "female"),)),
    ((IdMatch(("a", "c")),),),
    ((IdMatch(("a", "c")),), (TokenMatch("identifier", "urn:mrn", "2"),)),
    ((StringMatch("name", "prefix", "mul"),),),
    ((StringMatch("name", "prefix", ""),),),
    ((StringMatch("name", "contains", "ld"),),),
    ((StringMatch("name", "exact", "Müller"),),),
    ((StringMatch("name", "exact", "müller"),),),
    ((TokenMatch("gender", None, "female"), StringMatch("name", "exact", "Anna")),),
]


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "match.sqlite3")
    await store.open()
    when = datetime(2024, 1, 1, tzinfo=UTC)
    for resource_id, entries in RESOURCES.items():
        body = orjson.dumps({"resourceType": "Patient", "id": resource_id})
        version = WriteRecord("Patient", resource_id, 1, 0, when, "POST", body, entries)
        await store.write([version])
    return store


@pytest.mark.parametrize("where", JUDGED, ids=[str(n) for n in range(len(JUDGED))])
async def test_the_matcher_and_the_index_agree(store: SqliteStore, where: Where) -> None:
    plan = SearchPlan(("Patient",), where, total="none")
    try:
        indexed = {version.resource_id for version in (await store.search(plan)).matches}
    finally:
        await store.close()

    judged = {
        resource_id
        for resource_id, entries in RESOURCES.items()
        if entry_match.matches(plan, "Patient", resource_id, entries)
    }

    assert entry_match.supports(plan)
    assert judged == indexed


def test_another_type_never_matches() -> None:
    plan = SearchPlan(("Observation",), ((IdMatch(("a",)),),))
    assert not entry_match.matches(plan, "Patient", "a", RESOURCES["a"])


@pytest.mark.parametrize(
    "plan",
    [
        SearchPlan(("Patient", "Practitioner"), ((IdMatch(("a",)),),)),
        SearchPlan((), ((IdMatch(("a",)),),)),
        SearchPlan(("Patient",), ((ReferenceMatch("organization", "Organization", "1"),),)),
        SearchPlan(
            ("Patient",),
            (
                (TokenMatch("identifier", None, "1"),),
                (RangeMatch("birthdate", "date", ((Bound("low", ">=", 0),),)),),
            ),
        ),
    ],
    ids=["two types", "any type", "reference", "a range beside a token"],
)
def test_shapes_it_cannot_judge_are_left_to_the_index(plan: SearchPlan) -> None:
    assert not entry_match.supports(plan)
    with pytest.raises(ValueError, match="ask the index"):
        entry_match.matches(plan, "Patient", "a", RESOURCES["a"])
