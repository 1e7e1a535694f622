"""The transaction contract (http.html#transaction), against every backend.

Transaction semantics are part of the storage contract: a backend must commit a
transaction's records all together or not at all, and refuse the whole set when another
writer changed one of its resources. Each test runs the real bundle service (validation,
indexing, reference rewriting) on a fresh store of the backend under test and checks what
was stored afterwards, not only what was answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.definitions import load_definitions
from fhir_server.errors import FhirError
from fhir_server.search.plan import SearchPlan
from fhir_server.search.registry import load_search_parameters
from fhir_server.services import bundles as bundles_module
from fhir_server.services.bundles import BundleOutcome, BundleService
from fhir_server.services.resources import ResourceService
from fhir_server.services.search import SearchService
from fhir_server.services.search_index import SearchIndex
from fhir_server.services.staging import StagedWrites
from fhir_server.storage.base import ResourceStore
from fhir_server.validation.structure import StructureValidator
from tests.contract.conftest import StoreFactory

BASE = "http://rofecare.test/fhir"
MRN = "http://hospital.example/mrn"


class Stack:
    def __init__(self, store: ResourceStore, max_entries: int = 10_000) -> None:
        definitions = load_definitions()
        index = SearchIndex(
            load_search_parameters(), definitions.is_resource_type, default_count=100,
            max_count=1000,
        )  # fmt: skip
        validator = StructureValidator(definitions.resource_types, 64)
        self.store = store
        self.resources = ResourceService(store, definitions, validator, index)
        self.search = SearchService(store, self.resources, index, definitions)
        self.bundles = BundleService(self.resources, self.search, max_entries=max_entries)

    async def run(self, entries: list[dict[str, Any]], kind: str = "transaction") -> BundleOutcome:
        bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
        return await self.bundles.process(bundle, base_url=BASE)

    async def stored(self, resource_type: str) -> list[dict[str, Any]]:
        page = await self.store.search(SearchPlan((resource_type,), (), count=1000))
        return [orjson.loads(version.body) for version in page.matches if version.body]

    async def count_all(self) -> int:
        total = 0
        for kind in ("Patient", "Observation", "Encounter", "Organization"):
            total += len(await self.stored(kind))
        return total


@pytest.fixture
async def stack(store_factory: StoreFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    store = store_factory(tmp_path)
    await store.open()
    try:
        yield Stack(store)
    finally:
        await store.close()


def patient(mrn: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"family": "Okafor", "given": ["Ada"]}],
        **extra,
    }


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        **extra,
    }


def post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], url: str, **request: Any) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def ids(outcome: BundleOutcome) -> list[str]:
    return [item.write.version.resource_id for item in outcome.entries if item.write]


async def test_placeholders_are_rewritten_at_any_depth(stack: Stack) -> None:
    """urn:uuid and urn:oid fullUrls, referenced from a plain reference, an extension, a
    contained resource and a backbone element, all end up as Patient/<new id>."""
    uuid_url = "urn:uuid:6b7a4f5e-8b1c-4a53-9c1e-1f2a3b4c5d6e"
    oid_url = "urn:oid:1.2.3.4.5"
    obs = observation(
        uuid_url,
        extension=[
            {
                "url": "http://rofecare.example/ext/reviewer",
                "valueReference": {"reference": oid_url},
            }
        ],
        contained=[
            {
                "resourceType": "Observation",
                "id": "inner",
                "status": "final",
                "code": {"text": "inner"},
                "subject": {"reference": uuid_url},
            }
        ],
        performer=[{"reference": oid_url}],
        hasMember=[{"reference": "#inner"}],
    )
    outcome = await stack.run(
        [
            post(obs, "urn:uuid:0b7a4f5e-8b1c-4a53-9c1e-1f2a3b4c5d6f"),
            post(patient("1"), uuid_url),
            post({"resourceType": "Practitioner", "name": [{"family": "Ngozi"}]}, oid_url),
        ]
    )
    assert [item.status for item in outcome.entries] == [201, 201, 201]
    obs_id, patient_id, practitioner_id = ids(outcome)
    stored = orjson.loads((await stack.resources.read("Observation", obs_id)).body or b"")
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored["extension"][0]["valueReference"]["reference"] == (
        f"Practitioner/{practitioner_id}"
    )
    assert stored["contained"][0]["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored["performer"][0]["reference"] == f"Practitioner/{practitioner_id}"
    assert stored["hasMember"][0]["reference"] == "#inner"
    # and the index knows the rewritten reference
    found = await stack.search.search(
        ("Observation",), [("subject", f"Patient/{patient_id}")], strict=True
    )
    assert [v.resource_id for v in found.page.matches] == [obs_id]


@pytest.mark.parametrize("position", [0, 1, 2, 3])
async def test_a_failure_anywhere_rolls_everything_back(stack: Stack, position: int) -> None:
    entries = [post(patient(str(n)), f"urn:uuid:00000000-0000-0000-0000-00000000000{n}")
               for n in range(3)]  # fmt: skip
    bad = post({"resourceType": "Patient", "gender": "not-a-gender"})
    entries.insert(position, bad)
    with pytest.raises(FhirError) as caught:
        await stack.run(entries)
    assert caught.value.status == 400
    paths = [path for issue in caught.value.issues for path in issue.expression]
    assert any(path.startswith(f"Bundle.entry[{position}]") for path in paths), paths
    assert await stack.count_all() == 0


async def test_a_failing_update_after_creates_rolls_back_the_creates(stack: Stack) -> None:
    existing = (await stack.resources.create("Patient", patient("9"))).version
    entries = [
        post(patient("1"), "urn:uuid:00000000-0000-0000-0000-000000000001"),
        put(
            {**patient("9"), "id": existing.resource_id},
            f"Patient/{existing.resource_id}",
            ifMatch='W/"7"',
        ),
    ]
    with pytest.raises(FhirError) as caught:
        await stack.run(entries)
    assert caught.value.status == 412
    assert len(await stack.stored("Patient")) == 1
    assert (await stack.resources.read("Patient", existing.resource_id)).version_id == 1


async def test_entries_run_delete_post_put_get_and_reads_see_the_writes(stack: Stack) -> None:
    doomed = (await stack.resources.create("Patient", patient("d"))).version
    kept = (await stack.resources.create("Patient", patient("k"))).version
    entries = [
        {"request": {"method": "GET", "url": f"Patient/{kept.resource_id}"}},
        put({**patient("k", gender="male"), "id": kept.resource_id}, f"Patient/{kept.resource_id}"),
        post(patient("n")),
        {"request": {"method": "DELETE", "url": f"Patient/{doomed.resource_id}"}},
    ]
    outcome = await stack.run(entries)
    assert [item.status for item in outcome.entries] == [200, 200, 201, 200]
    read = outcome.entries[0].read
    assert read is not None and read.version_id == 2  # the GET ran after the PUT
    assert outcome.entries[3].write and outcome.entries[3].write.version.deleted
    assert {p["identifier"][0]["value"] for p in await stack.stored("Patient")} == {"k", "n"}


async def test_conditional_create_reuses_a_match_and_its_references_follow(stack: Stack) -> None:
    existing = (await stack.resources.create("Patient", patient("42"))).version
    url = "urn:uuid:11111111-0000-0000-0000-000000000000"
    outcome = await stack.run(
        [
            post(patient("42"), url, ifNoneExist=f"identifier={MRN}|42"),
            post(observation(url)),
        ]
    )
    assert [item.status for item in outcome.entries] == [200, 201]
    assert ids(outcome)[0] == existing.resource_id
    assert len(await stack.stored("Patient")) == 1
    obs = (await stack.stored("Observation"))[0]
    assert obs["subject"]["reference"] == f"Patient/{existing.resource_id}"


async def test_conditional_create_with_several_matches_is_412(stack: Stack) -> None:
    await stack.resources.create("Patient", patient("7"))
    await stack.resources.create("Patient", patient("7"))
    with pytest.raises(FhirError) as caught:
        await stack.run(
            [post(observation("Patient/x")), post(patient("7"), ifNoneExist=f"identifier={MRN}|7")]
        )
    assert caught.value.status == 412
    assert len(await stack.stored("Observation")) == 0


async def test_conditional_update_updates_a_match_or_creates(stack: Stack) -> None:
    existing = (await stack.resources.create("Patient", patient("5"))).version
    outcome = await stack.run(
        [
            put(patient("5", gender="female"), f"Patient?identifier={MRN}|5"),
            put(patient("6", gender="male"), f"Patient?identifier={MRN}|6"),
        ]
    )
    assert [item.status for item in outcome.entries] == [200, 201]
    assert ids(outcome)[0] == existing.resource_id
    genders = {p["identifier"][0]["value"]: p["gender"] for p in await stack.stored("Patient")}
    assert genders == {"5": "female", "6": "male"}


async def test_conditional_references_resolve_or_fail(stack: Stack) -> None:
    target = (await stack.resources.create("Patient", patient("77"))).version
    outcome = await stack.run([post(observation(f"Patient?identifier={MRN}|77"))])
    obs = (await stack.stored("Observation"))[0]
    assert outcome.entries[0].status == 201
    assert obs["subject"]["reference"] == f"Patient/{target.resource_id}"

    await stack.resources.create("Patient", patient("88"))
    await stack.resources.create("Patient", patient("88"))
    for reference, code in (
        (f"Patient?identifier={MRN}|88", "rofecare-2407"),  # several
        (f"Patient?identifier={MRN}|99", "rofecare-2406"),  # none
    ):
        with pytest.raises(FhirError) as caught:
            await stack.run([post(patient("new")), post(observation(reference))])
        assert caught.value.status == 412
        assert caught.value.issues[0].rofecare_code == code
        assert caught.value.issues[0].expression == ("Bundle.entry[1]",)
    assert len(await stack.stored("Observation")) == 1
    assert len(await stack.stored("Patient")) == 3


@pytest.mark.parametrize(
    ("entries", "code"),
    [
        pytest.param(
            [post(patient("1"), "urn:uuid:a"), post(patient("2"), "urn:uuid:a")],
            "rofecare-2403",
            id="duplicate-fullUrl",
        ),
        pytest.param(
            [put(patient("1"), "Patient/same"), put(patient("2"), "Patient/same")],
            "rofecare-2404",
            id="two-writes-one-resource",
        ),
        pytest.param(
            [post(observation("urn:uuid:0000-nobody"))], "rofecare-2405", id="unknown-placeholder"
        ),
        pytest.param(
            [
                post(patient("1"), "urn:uuid:p1", ifNoneExist="link=urn:uuid:p2"),
                post(patient("2"), "urn:uuid:p2", ifNoneExist="link=urn:uuid:p1"),
            ],
            "rofecare-2408",
            id="circular-conditions",
        ),
        pytest.param([{"resource": patient()}], "rofecare-2402", id="missing-request"),
        pytest.param(
            [{"resource": patient(), "request": {"method": "COPY", "url": "Patient"}}],
            "rofecare-2402",
            id="bad-method",
        ),
        pytest.param(
            [{"resource": patient(), "request": {"method": "POST", "url": "Observation"}}],
            "rofecare-2402",
            id="type-mismatch",
        ),
    ],
)
async def test_malformed_transactions_are_400_and_write_nothing(
    stack: Stack, entries: list[dict[str, Any]], code: str
) -> None:
    with pytest.raises(FhirError) as caught:
        await stack.run([post(patient("first")), *entries])
    assert caught.value.status == 400
    assert code in [issue.rofecare_code for issue in caught.value.issues]
    assert await stack.count_all() == 0


async def test_entry_limit_is_413(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = store_factory(tmp_path)
    await store.open()
    try:
        small = Stack(store, max_entries=3)
        with pytest.raises(FhirError) as caught:
            await small.run([post(patient(str(n))) for n in range(4)])
        assert caught.value.status == 413
        assert await small.count_all() == 0
    finally:
        await store.close()


async def test_concurrent_transactions_serialize_without_lost_updates(stack: Stack) -> None:
    """Eight transactions each rewrite the same two patients: every one commits (retrying
    on conflict), both patients end at version 9, and at every version the two carry the
    same writer's mark, so no transaction saw a half-applied other."""
    for name in ("a", "b"):
        await stack.resources.update("Patient", name, {**patient(name), "id": name})

    async def transaction(writer: int) -> None:
        mark = [{"family": f"Writer{writer}"}]
        await stack.run(
            [
                put({**patient("a"), "id": "a", "name": mark}, "Patient/a"),
                put({**patient("b"), "id": "b", "name": mark}, "Patient/b"),
            ]
        )

    await asyncio.wait_for(asyncio.gather(*(transaction(n) for n in range(8))), timeout=60)
    for name in ("a", "b"):
        assert (await stack.resources.read("Patient", name)).version_id == 9
    writers = []
    for version in range(2, 10):
        marks = []
        for name in ("a", "b"):
            body = (await stack.resources.vread("Patient", name, str(version))).body or b""
            marks.append(orjson.loads(body)["name"][0]["family"])
        assert marks[0] == marks[1], (version, marks)
        writers.append(marks[0])
    assert sorted(writers) == sorted(f"Writer{n}" for n in range(8))


async def test_a_batch_keeps_good_entries_when_others_fail(stack: Stack) -> None:
    outcome = await stack.run(
        [
            post(patient("1")),
            {"resource": patient("2")},  # no request
            post({"resourceType": "Patient", "birthDate": "yesterday"}),
            post(observation("urn:uuid:nobody")),
            {"request": {"method": "GET", "url": "Patient/missing"}},
            post(patient("3")),
        ],
        kind="batch",
    )
    assert [item.status for item in outcome.entries] == [201, 400, 400, 400, 404, 201]
    errors = [item.error for item in outcome.entries]
    assert errors[1] is not None and errors[1].issues[0].rofecare_code == "rofecare-2402"
    assert errors[3] is not None and errors[3].issues[0].rofecare_code == "rofecare-2405"
    assert {p["identifier"][0]["value"] for p in await stack.stored("Patient")} == {"1", "3"}


def watch_commits(stack: Stack) -> list[tuple[str, int, bool]]:
    """(interaction, records, committed) of each commit of staged writes, as they end."""
    commits: list[tuple[str, int, bool]] = []
    commit_stage = stack.resources.commit_stage

    async def spy(stage: StagedWrites, interaction: str = "transaction") -> None:
        try:
            await commit_stage(stage, interaction)
        except BaseException:
            commits.append((interaction, len(stage.records), False))
            raise
        commits.append((interaction, len(stage.records), True))

    stack.resources.commit_stage = spy  # type: ignore[method-assign]
    return commits


async def test_a_batch_sent_again_stops_grouping_after_a_failed_group(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second time a batch of conditional creates comes, every condition matches in
    the store: a group's commit fails, and the groups after it run one by one rather than
    being staged in vain. (Groups of 10 here: the MongoDB stand-in scans in Python.)"""
    monkeypatch.setattr(bundles_module, "BATCH_GROUP", 10)
    entries = [post(patient(f"r{n}"), ifNoneExist=f"identifier={MRN}|r{n}") for n in range(45)]
    first = await stack.run(entries, kind="batch")
    assert {item.status for item in first.entries} == {201}
    commits = watch_commits(stack)
    again = await stack.run(entries, kind="batch")
    assert {item.status for item in again.entries} == {200}
    assert [item.write.version.resource_id for item in again.entries if item.write] == [
        item.write.version.resource_id for item in first.entries if item.write
    ]
    # Two groups are staged at a time, so one or two fail; none of the other three is tried.
    assert 1 <= len(commits) <= 2 and not any(committed for _, _, committed in commits)
    assert len(await stack.stored("Patient")) == 45


async def test_a_batch_commits_its_writes_in_groups_and_each_entry_stays_on_its_own(
    stack: Stack,
) -> None:
    """Batch writes are staged and committed a group at a time (services/bundles.py,
    _batch_group). An entry writing what another of its group writes runs after the
    group; whatever makes a group's commit fail (here a conditional create whose condition
    matched only in the store) leaves nothing of it, and its entries answer as on their
    own."""
    await stack.resources.update("Patient", "known", {**patient("K"), "id": "known"})
    commits = watch_commits(stack)
    many = [post(patient(f"m{n}")) for n in range(230)]
    outcome = await stack.run(
        [
            put({**patient("K"), "id": "known", "gender": "female"}, "Patient/known"),
            {  # the same resource, under another key: after its group
                "resource": {**patient("K"), "gender": "male"},
                "request": {"method": "PUT", "url": "Patient?_id=known"},
            },
            post({"resourceType": "Patient", "birthDate": "yesterday"}),  # invalid
            *many,
            post(patient("K2"), ifNoneExist=f"identifier={MRN}|K"),  # matches 'known'
            post(patient("new")),
        ],
        kind="batch",
    )
    statuses = [item.status for item in outcome.entries]
    assert statuses[:3] == [200, 200, 400]
    assert statuses[3:-2] == [201] * len(many)
    assert statuses[-2:] == [200, 201]
    match = outcome.entries[-2].write
    assert match is not None and match.version.resource_id == "known"
    stored = await stack.stored("Patient")
    values = [p["identifier"][0]["value"] for p in stored]
    assert sorted(values) == sorted(["K", "new", *(f"m{n}" for n in range(230))])
    known = await stack.resources.read("Patient", "known")
    assert known.version_id == 3 and orjson.loads(known.body or b"")["gender"] == "male"
    # Groups of 100 entries (two at a time, so in either order): the first (the PUT, 97
    # creates; the invalid entry and the second write of 'known' left out) and the second
    # committed whole; the last (33 creates, the conditional create, one more) failed at
    # commit and ran entry by entry.
    assert sorted(commits) == [("batch", 35, False), ("batch", 98, True), ("batch", 100, True)]


async def test_transactions_of_two_servers_on_one_store_retry_on_conflict(stack: Stack) -> None:
    """Two service stacks over one store stand for two worker processes: they share no
    locks, so their transactions meet at commit, where the loser runs again on fresh data."""
    other = Stack(stack.store)
    for name in ("a", "b"):
        await stack.resources.update("Patient", name, {**patient(name), "id": name})

    async def transaction(server: Stack, writer: int) -> None:
        mark = [{"family": f"Writer{writer}"}]
        await server.run(
            [
                put({**patient("a"), "id": "a", "name": mark}, "Patient/a"),
                put({**patient("b"), "id": "b", "name": mark}, "Patient/b"),
            ]
        )

    runs = [transaction(stack if n % 2 else other, n) for n in range(4)]
    await asyncio.wait_for(asyncio.gather(*runs), timeout=60)
    for version in range(2, 6):
        marks = [
            orjson.loads((await stack.resources.vread("Patient", name, str(version))).body or b"")
            for name in ("a", "b")
        ]
        assert marks[0]["name"] == marks[1]["name"], version
    assert (await stack.resources.read("Patient", "a")).version_id == 5


@pytest.fixture
async def two_servers(
    store_factory: StoreFactory, tmp_path: Path
) -> AsyncIterator[tuple[Stack, Stack]]:
    """Two stores opened on one database, each under its own services: two worker
    processes in all but the process boundary (no shared lock, cache or writer)."""
    first, second = store_factory(tmp_path), store_factory(tmp_path)
    await first.open()
    await second.open()
    try:
        yield Stack(first), Stack(second)
    finally:
        await first.close()
        await second.close()


async def test_conditional_creates_on_two_servers_create_one_resource(
    two_servers: tuple[Stack, Stack],
) -> None:
    """If-None-Exist holds across worker processes: the condition is checked again inside
    the write transaction, so of several simultaneous creates exactly one creates."""
    servers = two_servers
    condition = f"identifier={MRN}|900"

    async def create(n: int) -> bool:
        server = servers[n % 2]
        result = await server.resources.create("Patient", patient("900"), if_none_exist=condition)
        return result.created

    created = await asyncio.wait_for(asyncio.gather(*(create(n) for n in range(8))), 60)
    assert created.count(True) == 1
    assert len(await servers[0].stored("Patient")) == 1

    async def transaction(n: int) -> list[int]:
        server = servers[n % 2]
        outcome = await server.run(
            [
                post(patient("901"), "urn:uuid:c0000000-0000-0000-0000-00000000000" + str(n),
                     ifNoneExist=f"identifier={MRN}|901"),
                post(observation("urn:uuid:c0000000-0000-0000-0000-00000000000" + str(n))),
            ]
        )  # fmt: skip
        return [item.status for item in outcome.entries]

    statuses = await asyncio.wait_for(asyncio.gather(*(transaction(n) for n in range(6))), 60)
    assert sorted(s[0] for s in statuses) == [200] * 5 + [201]
    patients = [
        p for p in await servers[1].stored("Patient") if p["identifier"][0]["value"] == "901"
    ]
    assert len(patients) == 1
    subjects = {o["subject"]["reference"] for o in await servers[1].stored("Observation")}
    assert subjects == {f"Patient/{patients[0]['id']}"}


async def test_conditional_updates_on_two_servers_create_one_resource(
    two_servers: tuple[Stack, Stack],
) -> None:
    servers = two_servers

    async def update(n: int) -> bool:
        result = await servers[n % 2].resources.conditional_update(
            "Patient", f"identifier={MRN}|902", patient("902", gender="other")
        )
        return result.created

    created = await asyncio.wait_for(asyncio.gather(*(update(n) for n in range(8))), 60)
    assert created.count(True) == 1
    matching = [
        p for p in await servers[0].stored("Patient") if p["identifier"][0]["value"] == "902"
    ]
    assert len(matching) == 1
    assert matching[0]["meta"]["versionId"] == "8"


async def test_conditional_creates_in_batches_on_two_servers_create_one_resource(
    two_servers: tuple[Stack, Stack],
) -> None:
    """A batch runs each entry on its own, outside a transaction: a match that another
    process created after the entry's condition was searched is answered, not a fault."""
    servers = two_servers

    async def batch(n: int) -> int:
        outcome = await servers[n % 2].run(
            [post(patient("903"), ifNoneExist=f"identifier={MRN}|903")], kind="batch"
        )
        assert outcome.entries[0].write is not None, outcome.entries[0]
        return outcome.entries[0].status

    statuses = await asyncio.wait_for(asyncio.gather(*(batch(n) for n in range(8))), 60)
    assert sorted(statuses) == [200] * 7 + [201]
    matching = [
        p for p in await servers[0].stored("Patient") if p["identifier"][0]["value"] == "903"
    ]
    assert len(matching) == 1
