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
from tests.api.conftest import make_client, patient

BASE_URL = "http://rofecare.test/fhir"


def settings(data: Path) -> Settings:
    return Settings(data_dir=data, profile_validation="off")


def batch(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [{"resource": r, "request": {"method": "POST", "url": "Patient"}} for r in resources]
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


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
        big = batch([patient() for _ in range(3_000)])

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
