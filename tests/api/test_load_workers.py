"""The worker processes of ``rofecare load --jobs N`` (fhir_server/load_workers.py), real
processes on a real SQLite file: what the loader sees when a worker cannot start, dies with
a Bundle in flight, or is stopped."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.load_workers import WorkerFailed, WorkerPool
from fhir_server.services.bundles import BundleOutcome
from tests.api.conftest import make_client, patient

BASE_URL = "http://rofecare.test/fhir"


def settings(data: Path) -> Settings:
    return Settings(data_dir=data, profile_validation="off")


def batch(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [{"resource": r, "request": {"method": "POST", "url": "Patient"}} for r in resources]
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def kept_its_body(outcome: BundleOutcome) -> bool:
    write = outcome.entries[0].write
    assert write is not None
    return write.version.body is not None


def workers() -> list[multiprocessing.process.BaseProcess]:
    return [
        child
        for child in multiprocessing.active_children()
        if child.name.startswith("rofecare-load")
    ]


async def test_bundles_run_in_the_workers_and_their_outcomes_come_back(tmp_path: Path) -> None:
    pool = WorkerPool(settings(tmp_path / "data"), 2)
    await pool.start()
    try:
        assert len(workers()) == 2
        good = batch([patient(), patient(gender="robot")])
        transaction = {**batch([patient(birthDate="yesterday")]), "type": "transaction"}

        outcome = await pool.process(good, base_url=BASE_URL)
        with pytest.raises(FhirError) as refused:
            await pool.process(transaction, base_url=BASE_URL)
    finally:
        await pool.close()

    assert outcome.kind == "batch"
    created, invalid = outcome.entries
    assert created.status == 201 and created.write is not None and created.write.created
    assert created.write.version.body is None  # the bodies stay in the worker
    assert invalid.error is not None and invalid.error.rofecare_code == "rofecare-1401"
    assert refused.value.status == 400
    assert refused.value.issues[0].expression == ("Bundle.entry[0].resource.birthDate",)
    assert workers() == []  # closed: each worker closed its store and exited
    with make_client(tmp_path / "data") as client:
        assert client.get("/fhir/Patient?_summary=count").json()["total"] == 1


async def test_a_worker_that_cannot_open_the_store_fails_the_start_with_its_reason(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "rofecare.sqlite3").write_bytes(b"this is not a database" * 200)
    pool = WorkerPool(Settings(data_dir=data, profile_validation="off"), 2)

    with pytest.raises(WorkerFailed, match="not a database"):
        await pool.start()

    await asyncio.sleep(0)
    for child in workers():
        child.join(10)
    assert workers() == []


async def test_a_worker_that_dies_fails_its_bundles_in_flight_and_nothing_hangs(
    tmp_path: Path,
) -> None:
    pool = WorkerPool(settings(tmp_path / "data"), 1)
    await pool.start()
    try:
        (worker,) = workers()
        # Still in flight half a second later: 3,000 were done by then on a faster host.
        big = batch([patient() for _ in range(10_000)])  # the most a Bundle may hold

        async def kill_it_meanwhile() -> None:
            await asyncio.sleep(0.5)
            worker.kill()

        with pytest.raises(WorkerFailed, match="exited"):
            running = pool.process(big, base_url=BASE_URL)
            await asyncio.wait_for(asyncio.gather(running, kill_it_meanwhile()), 30)
        with pytest.raises(WorkerFailed, match="stopped"):
            await pool.process(batch([patient()]), base_url=BASE_URL)
    finally:
        await asyncio.wait_for(pool.close(), 30)


async def test_this_process_takes_a_share_of_the_bundles(tmp_path: Path) -> None:
    """``--jobs 2``: this process and one worker. Two Bundles at once go one each way; the
    one run here keeps its stored bodies, the worker's come back without."""
    from fhir_server.core import build_core

    core = build_core(settings(tmp_path / "data"))
    await core.store.open()
    pool = WorkerPool(settings(tmp_path / "data"), 1, local=core.bundles)
    await pool.start()
    try:
        assert len(workers()) == 1
        first, second = await asyncio.gather(
            pool.process(batch([patient()]), base_url=BASE_URL),
            pool.process(batch([patient()]), base_url=BASE_URL),
        )
    finally:
        await pool.close()
        await core.store.close()

    assert sorted(map(kept_its_body, (first, second))) == [False, True]
    with make_client(tmp_path / "data") as client:
        assert client.get("/fhir/Patient?_summary=count").json()["total"] == 2


async def test_bundles_go_to_the_lanes_left_when_a_worker_dies(tmp_path: Path) -> None:
    from fhir_server.core import build_core

    core = build_core(settings(tmp_path / "data"))
    await core.store.open()
    pool = WorkerPool(settings(tmp_path / "data"), 1, local=core.bundles)
    await pool.start()
    try:
        (worker,) = workers()
        worker.kill()
        worker.join(10)
        await asyncio.sleep(0.2)  # the reply thread sees the pipe close

        outcomes = [await pool.process(batch([patient()]), base_url=BASE_URL) for _ in range(3)]
    finally:
        await pool.close()
        await core.store.close()

    assert all(kept_its_body(outcome) for outcome in outcomes)  # all ran in this process
