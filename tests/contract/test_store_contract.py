"""The ResourceStore contract: versions, history, conditional lookups, atomicity, concurrency.

Every backend must pass this file unchanged (see conftest.BACKENDS).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from fhir_server.search.plan import IdMatch, SearchPlan, TokenMatch, Where
from fhir_server.search.values import TokenEntry
from fhir_server.storage.base import (
    Claim,
    GuardViolated,
    HistoryQuery,
    IndexRecord,
    ResourceStore,
    VersionConflict,
    WriteGuard,
    WriteRecord,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def record(
    resource_id: str,
    version: int,
    *,
    resource_type: str = "Patient",
    at: datetime | None = None,
    deleted: bool = False,
    tokens: tuple[TokenEntry, ...] = (),
    previous: int | None = None,
) -> WriteRecord:
    body = None
    if not deleted:
        body = orjson.dumps(
            {"resourceType": resource_type, "id": resource_id, "meta": {"versionId": str(version)}}
        )
    return WriteRecord(
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=version,
        previous_version=version - 1 if previous is None else previous,
        last_updated=at or T0 + timedelta(minutes=version),
        method="DELETE" if deleted else ("POST" if version == 1 else "PUT"),
        body=body,
        entries=tokens,
    )


async def test_read_of_unknown_id_is_none(store: ResourceStore) -> None:
    assert await store.read("Patient", "nope") is None
    assert await store.vread("Patient", "nope", 1) is None


async def test_every_version_is_kept_and_read_returns_the_newest(store: ResourceStore) -> None:
    for version in (1, 2, 3):
        await store.write([record("a", version)])
    current = await store.read("Patient", "a")
    assert current is not None and current.version_id == 3
    for version in (1, 2, 3):
        stored = await store.vread("Patient", "a", version)
        assert stored is not None and stored.body is not None
        assert orjson.loads(stored.body)["meta"]["versionId"] == str(version)
        assert stored.last_updated == T0 + timedelta(minutes=version)


async def test_delete_is_a_version_and_history_keeps_it(store: ResourceStore) -> None:
    await store.write([record("a", 1)])
    await store.write([record("a", 2, deleted=True)])
    current = await store.read("Patient", "a")
    assert current is not None and current.deleted and current.body is None
    assert (await store.vread("Patient", "a", 1)) is not None
    page = await store.history(HistoryQuery("Patient", "a"))
    assert [(v.version_id, v.deleted) for v in page.versions] == [(2, True), (1, False)]


async def test_write_refuses_a_stale_previous_version(store: ResourceStore) -> None:
    await store.write([record("a", 1)])
    await store.write([record("a", 2)])
    with pytest.raises(VersionConflict) as caught:
        await store.write([record("a", 2)])
    assert caught.value.current_version == 2
    with pytest.raises(VersionConflict):
        await store.write([record("a", 1)])  # create over an existing resource


async def test_a_failed_batch_writes_nothing(store: ResourceStore) -> None:
    await store.write([record("b", 1)])
    with pytest.raises(VersionConflict):
        await store.write([record("a", 1), record("b", 1)])
    assert await store.read("Patient", "a") is None
    page = await store.history(HistoryQuery())
    assert [(v.resource_id, v.version_id) for v in page.versions] == [("b", 1)]


async def test_types_are_separate_id_spaces(store: ResourceStore) -> None:
    await store.write([record("x", 1, resource_type="Patient")])
    await store.write([record("x", 1, resource_type="Observation")])
    patient = await store.read("Patient", "x")
    observation = await store.read("Observation", "x")
    assert patient is not None and observation is not None
    assert patient.body != observation.body


async def test_history_levels_order_and_paging(store: ResourceStore) -> None:
    await store.write([record("a", 1, at=T0)])
    await store.write([record("o", 1, resource_type="Observation", at=T0 + timedelta(seconds=1))])
    await store.write([record("a", 2, at=T0 + timedelta(seconds=2))])
    await store.write([record("b", 1, at=T0 + timedelta(seconds=3))])
    system = await store.history(HistoryQuery())
    assert [(v.resource_id, v.version_id) for v in system.versions] == [
        ("b", 1),
        ("a", 2),
        ("o", 1),
        ("a", 1),
    ]
    by_type = await store.history(HistoryQuery("Patient"))
    assert [(v.resource_id, v.version_id) for v in by_type.versions] == [
        ("b", 1),
        ("a", 2),
        ("a", 1),
    ]
    first = await store.history(HistoryQuery(count=3))
    assert len(first.versions) == 3 and first.next_cursor is not None
    # New writes after the first page do not shift the second page.
    await store.write([record("c", 1, at=T0 + timedelta(seconds=9))])
    second = await store.history(HistoryQuery(count=3, cursor=first.next_cursor))
    assert [(v.resource_id, v.version_id) for v in second.versions] == [("a", 1)]
    assert second.next_cursor is None


async def test_history_since_and_at(store: ResourceStore) -> None:
    await store.write([record("a", 1, at=T0)])
    await store.write([record("a", 2, at=T0 + timedelta(hours=1))])
    await store.write([record("a", 3, at=T0 + timedelta(hours=2))])
    since = await store.history(HistoryQuery("Patient", "a", since=T0 + timedelta(hours=1)))
    assert [v.version_id for v in since.versions] == [3, 2]
    # Version 2 was current from 01:00 to 02:00; _at=01:30 (a one-minute period) finds only it.
    start = T0 + timedelta(hours=1, minutes=30)
    at = await store.history(HistoryQuery("Patient", "a", at=(start, start + timedelta(minutes=1))))
    assert [v.version_id for v in at.versions] == [2]
    # A period covering the whole day finds every version that was current during it.
    whole_day = await store.history(HistoryQuery("Patient", "a", at=(T0, T0 + timedelta(days=1))))
    assert [v.version_id for v in whole_day.versions] == [3, 2, 1]


def identifier(system: str | None, code: str) -> TokenMatch:
    return TokenMatch("identifier", system, code)


@pytest.mark.parametrize(
    ("resource_type", "where", "expected"),
    [
        ("Patient", ((IdMatch(("a",)),),), ["a"]),
        ("Patient", ((IdMatch(("a", "b")),),), ["a", "b"]),
        ("Patient", ((identifier("urn:mrn", "1"),),), ["a"]),
        ("Patient", ((identifier(None, "1"),),), ["a", "c"]),
        ("Patient", ((identifier("", "1"),),), ["c"]),
        ("Patient", ((identifier("urn:mrn", "1"), identifier("urn:mrn", "2")),), ["a", "b"]),
        ("Patient", ((IdMatch(("b",)),), (identifier("urn:mrn", "1"),)), []),
        ("Patient", ((identifier(None, "gone"),),), []),
        ("Observation", ((IdMatch(("a",)),),), []),
    ],
)
async def test_search_by_id_and_identifier(
    store: ResourceStore, resource_type: str, where: Where, expected: list[str]
) -> None:
    await store.write([record("a", 1, tokens=(TokenEntry("identifier", "urn:mrn", "1"),))])
    await store.write([record("b", 1, tokens=(TokenEntry("identifier", "urn:mrn", "2"),))])
    await store.write([record("c", 1, tokens=(TokenEntry("identifier", None, "1"),))])
    await store.write([record("d", 1, tokens=(TokenEntry("identifier", None, "gone"),))])
    await store.write([record("d", 2, deleted=True)])
    page = await store.search(SearchPlan((resource_type,), where))
    assert [version.resource_id for version in page.matches] == expected
    assert page.total == len(expected)


async def test_index_entries_follow_the_current_version(store: ResourceStore) -> None:
    old = TokenEntry("identifier", "urn:mrn", "old")
    new = TokenEntry("identifier", "urn:mrn", "new")
    await store.write([record("a", 1, tokens=(old,))])
    await store.write([record("a", 2, tokens=(new,))])
    by_old = SearchPlan(("Patient",), ((identifier("urn:mrn", "old"),),))
    by_new = SearchPlan(("Patient",), ((identifier("urn:mrn", "new"),),))
    assert (await store.search(by_old)).matches == []
    assert [v.version_id for v in (await store.search(by_new)).matches] == [2]


async def test_concurrent_writers_of_one_version_have_exactly_one_winner(
    store: ResourceStore,
) -> None:
    await store.write([record("a", 1)])
    outcomes = await asyncio.gather(
        *(store.write([record("a", 2)]) for _ in range(10)), return_exceptions=True
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, VersionConflict) for o in outcomes if o is not None)
    assert (await store.check()) == []


async def test_data_survives_reopening(store_factory: object, tmp_path: Path) -> None:
    from tests.contract.conftest import StoreFactory

    factory: StoreFactory = store_factory  # type: ignore[assignment]
    first = factory(tmp_path)
    await first.open()
    await first.write([record("a", 1), record("b", 1)])
    await first.close()
    second = factory(tmp_path)
    await second.open()
    try:
        assert (await second.read("Patient", "a")) is not None
        assert (await second.check()) == []
    finally:
        await second.close()


def guarded(
    resource_id: str, version: int, room: str, *, previous: int | None = None
) -> WriteRecord:
    """A resource holding ``room``, guarded so that no other current resource holds it."""
    entry = TokenEntry("identifier", "urn:room", room)
    plan = SearchPlan(("Patient",), ((identifier("urn:room", room),),))
    guard = WriteGuard(plan, f"room:{room}", "rofecare-1999", f"room {room} is taken")
    return replace(
        record(resource_id, version, tokens=(entry,), previous=previous), guards=(guard,)
    )


async def test_a_guard_refuses_a_write_another_resource_conflicts_with(
    store: ResourceStore,
) -> None:
    await store.write([guarded("a", 1, "101")])
    with pytest.raises(GuardViolated) as violated:
        await store.write([guarded("b", 1, "101")])
    assert violated.value.guard.code == "rofecare-1999"
    assert (await store.read("Patient", "b")) is None
    # The resource itself, and what its own write job holds, do not count against it.
    await store.write([guarded("a", 2, "101")])
    await store.write([record("a", 3, deleted=True), guarded("c", 1, "101")])
    await store.write([guarded("d", 1, "102")])
    assert (await store.check()) == []


async def test_of_simultaneous_guarded_writers_exactly_one_wins(store: ResourceStore) -> None:
    outcomes = await asyncio.gather(
        *(store.write([guarded(f"p{n}", 1, "201")]) for n in range(6)), return_exceptions=True
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, GuardViolated) for o in outcomes if o is not None)


async def test_a_guard_tolerates_the_matches_its_rule_judged_harmless_until_they_change(
    store: ResourceStore,
) -> None:
    await store.write([guarded("a", 1, "301")])
    harmless = replace(guarded("b", 1, "301"), guards=())
    guard = guarded("b", 1, "301").guards[0]
    tolerant = replace(guard, tolerated=frozenset({("Patient", "a", 1)}))
    await store.write([replace(harmless, guards=(tolerant,))])
    changed = replace(guarded("a", 2, "301"), guards=())
    await store.write([changed])  # "a" changed: what was judged of it no longer holds
    with pytest.raises(GuardViolated):
        await store.write([replace(record("c", 1), guards=(tolerant,))])


# -- claims (storage/base.py, Claim) ----------------------------------------------------------


def claiming(
    resource_id: str,
    version: int,
    *keys: str,
    enforce: bool = True,
    previous: int | None = None,
    deleted: bool = False,
) -> WriteRecord:
    """A Patient version holding ``keys``; ``enforce``: no other current resource may."""
    written = record(resource_id, version, previous=previous, deleted=deleted)
    enforced = tuple(Claim(key, "rofecare-1998", f"{key} is taken") for key in keys)
    return replace(written, claims=() if deleted else keys, enforced=enforced if enforce else ())


async def holders(store: ResourceStore, *keys: str) -> dict[str, list[str]]:
    found = await store.claimants(list(keys))
    return {key: sorted(f"{t}/{i}" for t, i in found.get(key, [])) for key in keys}


async def test_a_claim_refuses_a_write_another_resource_holds_it_against(
    store: ResourceStore,
) -> None:
    await store.write([claiming("a", 1, "mrn:1", "mrn:2")])
    with pytest.raises(GuardViolated) as violated:
        await store.write([claiming("b", 1, "mrn:3", "mrn:2")])
    assert violated.value.guard.code == "rofecare-1998"
    assert violated.value.guard.message == "mrn:2 is taken"
    assert (await store.read("Patient", "b")) is None
    assert await holders(store, "mrn:1", "mrn:2", "mrn:3") == {
        "mrn:1": ["Patient/a"],
        "mrn:2": ["Patient/a"],
        "mrn:3": [],  # the refused write left nothing
    }
    # Its own resource does not count against a claim; a resource gives up what it no
    # longer holds, by an update or a deletion.
    await store.write([claiming("a", 2, "mrn:1")])
    await store.write([claiming("b", 1, "mrn:2")])
    await store.write([claiming("a", 3, deleted=True)])
    await store.write([claiming("c", 1, "mrn:1")])
    assert await holders(store, "mrn:1", "mrn:2") == {
        "mrn:1": ["Patient/c"],
        "mrn:2": ["Patient/b"],
    }
    assert (await store.check()) == []


async def test_an_unenforced_claim_is_kept_and_counts_against_later_writes(
    store: ResourceStore,
) -> None:
    """A version written while the rules were off or warning still holds its keys."""
    await store.write([claiming("a", 1, "mrn:9", enforce=False)])
    await store.write([claiming("b", 1, "mrn:9", enforce=False)])  # a duplicate, allowed
    assert await holders(store, "mrn:9") == {"mrn:9": ["Patient/a", "Patient/b"]}
    with pytest.raises(GuardViolated):
        await store.write([claiming("c", 1, "mrn:9")])
    with pytest.raises(GuardViolated):  # "a" keeps it, whatever "b" claims
        await store.write([claiming("b", 2, "mrn:9", previous=1)])


async def test_a_claim_sees_the_rest_of_its_job(store: ResourceStore) -> None:
    """Two resources of one transaction may swap a key, never both hold it."""
    await store.write([claiming("a", 1, "bed:1"), claiming("b", 1, "bed:2")])
    await store.write([claiming("a", 2, "bed:2"), claiming("b", 2, "bed:1")])
    assert await holders(store, "bed:1", "bed:2") == {
        "bed:1": ["Patient/b"],
        "bed:2": ["Patient/a"],
    }
    with pytest.raises(GuardViolated):
        await store.write([claiming("c", 1, "bed:3"), claiming("d", 1, "bed:3")])
    assert (await store.read("Patient", "c")) is None


async def test_of_simultaneous_claims_of_one_key_exactly_one_wins(store: ResourceStore) -> None:
    answers = await outcomes(store, *([claiming(f"p{n}", 1, "mrn:race")] for n in range(6)))
    assert answers.count("written") == 1
    assert set(answers) == {"written", "GuardViolated"}
    winner = answers.index("written")
    assert await holders(store, "mrn:race") == {"mrn:race": [f"Patient/p{winner}"]}


async def test_a_claim_sees_the_writes_submitted_before_it_and_not_the_refused(
    store: ResourceStore,
) -> None:
    await store.write([claiming("old", 1, "mrn:5")])
    answers = await outcomes(
        store,
        [claiming("old", 2, "mrn:6")],  # gives up 5
        [claiming("stale", 3, "mrn:7")],  # refused (no version 2): holds nothing
        [claiming("new-5", 1, "mrn:5")],
        [claiming("new-7", 1, "mrn:7")],
        [claiming("new-6", 1, "mrn:6")],
    )
    assert answers == ["written", "VersionConflict", "written", "written", "GuardViolated"]


async def test_a_record_that_says_nothing_of_claims_leaves_them(store: ResourceStore) -> None:
    """``claims=None``: the version of a type no rule claims for; a deletion drops them."""
    await store.write([claiming("a", 1, "mrn:kept")])
    await store.write([replace(record("a", 2), claims=None)])
    assert await holders(store, "mrn:kept") == {"mrn:kept": ["Patient/a"]}
    await store.write([record("a", 3, deleted=True)])
    assert await holders(store, "mrn:kept") == {"mrn:kept": []}


async def test_reindexing_replaces_the_claims_of_a_resource(store: ResourceStore) -> None:
    await store.write([claiming("a", 1, "mrn:old", enforce=False)])
    await store.write([record("b", 1)])  # a type's record that says nothing of claims
    replaced = await store.replace_index(
        [
            IndexRecord("Patient", "a", 1, (), None, ("mrn:new",)),
            IndexRecord("Patient", "b", 1, (), None, None),
        ]
    )
    assert replaced == 2
    assert await holders(store, "mrn:old", "mrn:new") == {
        "mrn:old": [],
        "mrn:new": ["Patient/a"],
    }


# -- conditions checked inside one group commit ----------------------------------------------
# Writes submitted together are committed together (SQLite's group commit); a condition or a
# guard must see every write submitted before it, written or only queued, and none that was
# refused. asyncio.gather submits in order; how many share a commit does not change the answer.


def conditional(resource_id: str, room: str, *, tokens: tuple[TokenEntry, ...] = ()) -> WriteRecord:
    """A create of ``resource_id`` unless a current Patient holds ``room``."""
    plan = SearchPlan(("Patient",), ((identifier("urn:room", room),),))
    return replace(record(resource_id, 1, tokens=tokens), unless_exists=plan)


def room(value: str) -> TokenEntry:
    return TokenEntry("identifier", "urn:room", value)


async def outcomes(store: ResourceStore, *writes: list[WriteRecord]) -> list[str]:
    done = await asyncio.gather(*(store.write(w) for w in writes), return_exceptions=True)
    return [type(outcome).__name__ if outcome else "written" for outcome in done]


async def test_of_simultaneous_conditional_creates_of_one_thing_exactly_one_creates(
    store: ResourceStore,
) -> None:
    writes = [[conditional(f"p{n}", "401", tokens=(room("401"),))] for n in range(8)]

    answers = await outcomes(store, *writes)

    assert answers.count("written") == 1
    assert set(answers) == {"written", "ConditionMatched"}
    assert (await store.check()) == []


async def test_a_condition_sees_the_changes_and_deletions_submitted_before_it(
    store: ResourceStore,
) -> None:
    await store.write([record("moving", 1, tokens=(room("501"),))])
    await store.write([record("leaving", 1, tokens=(room("502"),))])

    answers = await outcomes(
        store,
        [record("moving", 2, tokens=(room("503"),))],  # gives up 501, takes 503
        [record("leaving", 2, deleted=True)],  # gives up 502
        [conditional("new-501", "501")],
        [conditional("new-502", "502")],
        [conditional("new-503", "503")],
    )

    assert answers == ["written", "written", "written", "written", "ConditionMatched"]


async def test_a_refused_write_submitted_before_a_condition_does_not_count(
    store: ResourceStore,
) -> None:
    await store.write([record("taken", 1)])

    answers = await outcomes(
        store,
        [record("taken", 1, tokens=(room("601"),))],  # a create of an existing id: refused
        [record("stale", 3, tokens=(room("602"),))],  # a stale update of nothing: refused
        [conditional("new-601", "601")],
        [conditional("new-602", "602")],
    )

    assert answers == ["VersionConflict", "VersionConflict", "written", "written"]
    by_room = SearchPlan(("Patient",), ((identifier("urn:room", "601"),),))
    assert [v.resource_id for v in (await store.search(by_room)).matches] == []


async def test_a_guard_sees_the_writes_submitted_before_it(store: ResourceStore) -> None:
    answers = await outcomes(
        store,
        [record("holder", 1, tokens=(room("701"),))],
        [guarded("rival", 1, "701")],
        [guarded("alone", 1, "702")],
    )

    assert answers == ["written", "GuardViolated", "written"]
