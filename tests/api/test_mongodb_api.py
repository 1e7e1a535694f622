"""The REST API over the MongoDB store, on the in-process STAND-IN for a server
(tests/contract/mongo_standin.py): what configuration selects, what a client sees while the
database is unreachable, and a standalone server refused at start-up.

The storage semantics themselves are the contract suite's (tests/contract), which runs
every case on this store too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.config import Settings
from fhir_server.core import build_core, build_store
from fhir_server.errors import StoreUnavailable
from fhir_server.services.load_ledger import Ledger
from fhir_server.services.load_report import Report
from fhir_server.services.load_sources import Walk
from fhir_server.services.loading import load
from fhir_server.services.reindex import count_current, reindex
from fhir_server.storage.mongo import MongoStore
from fhir_server.storage.mongo.store import StoreMisconfigured
from tests.api.conftest import FHIR_JSON, assert_outcome, observation, patient
from tests.contract.conftest import standin_store
from tests.contract.mongo_standin import StandInClient


def _client(tmp_path: Path) -> tuple[TestClient, StandInClient]:
    store = standin_store(tmp_path)
    app = build_app(
        Settings(data_dir=tmp_path, auth_enabled=False, profile_validation="off"), store=store
    )
    client = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    standin = store._client
    assert isinstance(standin, StandInClient)
    return client, standin


def test_a_mongodb_uri_selects_the_mongodb_store_and_its_database() -> None:
    settings = Settings(store="mongodb://rofe:s3cret@db1:27017,db2:27017/hospital?replicaSet=rs0")
    store = build_store(settings)
    assert isinstance(store, MongoStore)
    assert store._db.name == "hospital"
    assert Settings(store="mongodb://db1/?replicaSet=rs0").store_description().endswith("rs0")
    assert "s3cret" not in settings.store_description()  # the password is never printed


def test_an_unknown_store_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="Unsupported store") as raised:
        build_store(Settings(store="postgres://rofe:s3cret@db/x"))
    assert "s3cret" not in str(raised.value) and "rofe:***@db/x" in str(raised.value)


def test_rest_over_the_mongodb_store(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    with client:
        created = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]
        put = client.put(
            "/fhir/Observation/o1",
            json=observation(f"Patient/{patient_id}", id="o1"),
            headers=FHIR_JSON,
        )
        assert put.status_code == 201, put.text
        again = client.put(
            "/fhir/Observation/o1",
            json=observation(f"Patient/{patient_id}", id="o1", status="amended"),
            headers={**FHIR_JSON, "If-Match": 'W/"1"'},
        )
        assert again.status_code == 200 and again.json()["meta"]["versionId"] == "2"
        stale = client.put(
            "/fhir/Observation/o1",
            json=observation(f"Patient/{patient_id}", id="o1"),
            headers={**FHIR_JSON, "If-Match": 'W/"1"'},
        )
        assert_outcome(stale, 412)
        history = client.get("/fhir/Observation/o1/_history").json()
        assert [entry["resource"]["meta"]["versionId"] for entry in history["entry"]] == ["2", "1"]
        found = client.get(
            f"/fhir/Observation?subject=Patient/{patient_id}&_include=Observation:subject"
        ).json()
        modes = sorted(entry["search"]["mode"] for entry in found["entry"])
        assert modes == ["include", "match"]


def test_a_transaction_bundle_is_all_or_nothing_on_mongodb(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6a1c3b9e-0000-4000-8000-000000000001",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": observation("urn:uuid:6a1c3b9e-0000-4000-8000-000000000001"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {"resourceType": "Observation", "status": "not-a-status"},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    with client:
        failed = client.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert failed.status_code in (400, 422), failed.text
        assert client.get("/fhir/Patient").json().get("total") == 0
        bundle["entry"].pop()
        done = client.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert done.status_code == 200, done.text
        observations = client.get("/fhir/Observation").json()
        subject = observations["entry"][0]["resource"]["subject"]["reference"]
        assert subject.startswith("Patient/") and observations["total"] == 1


def test_an_unreachable_database_is_a_503_with_retry_after_and_then_recovers(
    tmp_path: Path,
) -> None:
    client, standin = _client(tmp_path)
    with client:
        created = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        patient_id = created.json()["id"]
        standin.down = True
        for response in (
            client.get(f"/fhir/Patient/{patient_id}"),
            client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON),
            client.get("/fhir/Patient?name=a"),
        ):
            assert_outcome(response, 503, "rofecare-1510")
            assert response.headers["Retry-After"] == "5"
        standin.down = False
        assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200
        assert client.get("/fhir/Patient").json()["total"] == 1  # the failed create left nothing


async def test_a_standalone_server_is_refused_at_start_up(tmp_path: Path) -> None:
    store = standin_store(tmp_path)
    standin = store._client
    assert isinstance(standin, StandInClient)
    standin.standalone = True
    with pytest.raises(StoreMisconfigured, match="replica set"):
        await store.open()


async def test_bulk_load_search_and_reindex_over_the_mongodb_store(tmp_path: Path) -> None:
    """``rofecare load``'s loader and ``rofecare reindex`` on the MongoDB store: a
    transaction Bundle (urn:uuid references) and NDJSON load completely, search finds them,
    and a reindex rewrites every resource's search values without changing an answer.
    (Small on purpose: the stand-in scans its documents in Python for every query.)"""
    subject = "urn:uuid:6a1c3b9e-0000-4000-8000-0000000000aa"
    entries = [
        {"fullUrl": subject, "resource": patient(), "request": {"method": "POST", "url": "Patient"}}
    ]
    entries += [
        {"resource": observation(subject), "request": {"method": "POST", "url": "Observation"}}
        for _ in range(3)
    ]
    source = tmp_path / "input"
    source.mkdir()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    (source / "chart.json").write_text(json.dumps(bundle))
    lines = [json.dumps(patient(id=f"nd{number}")) for number in range(5)]
    (source / "patients.ndjson").write_text("\n".join(lines) + "\n")
    store = standin_store(tmp_path)
    core = build_core(Settings(data_dir=tmp_path / "data", profile_validation="off"), store=store)
    await store.open()
    try:
        await core.service.reload_search_parameters()
        summary = await load(
            core.bundles,
            store,
            Walk(256 * 1024 * 1024),
            [source],
            ledger=Ledger(tmp_path / "ledger.sqlite3", "stand-in"),
            report=Report(tmp_path / "report.ndjson"),
            base_url="http://rofecare.test/fhir",
        )
        assert summary.failed == 0 and summary.loaded == 9, summary
        # and the AuditEvents: one for the transaction, one for the batch of NDJSON lines
        # (its writes commit as a group)
        assert await count_current(store) == 9 + 2
        patients = await core.search.search(("Patient",), [("_total", "accurate")])
        assert patients.page.total == 6
        pairs = [("subject:Patient.gender", "female"), ("_total", "accurate")]
        before = await core.search.search(("Observation",), pairs)
        assert before.page.total == 3
        reindexed = await reindex(store, core.search_index)
        assert reindexed.reindexed == 9 + 2
        after = await core.search.search(("Observation",), pairs)
        assert after.page.total == before.page.total
        assert await store.check() == []
    finally:
        await store.close()


async def test_index_creation_is_idempotent_across_workers(tmp_path: Path) -> None:
    first, second = standin_store(tmp_path), standin_store(tmp_path)
    await first.open()
    await second.open()  # a second worker starting on the same database
    names = set(await _index_names(first))
    assert {"token", "string", "date_low", "reference", "creation_order"} <= names
    await first.close()
    await second.close()


async def _index_names(store: MongoStore) -> list[str]:
    collection = store._current._sync  # the stand-in's mongomock collection
    return list(collection.index_information())


async def test_the_real_driver_answers_503_when_no_server_is_reachable() -> None:
    """PyMongo itself (no stand-in): nothing listens on port 1, so server selection fails
    and the store turns it into the 503 a client retries after."""
    store = MongoStore.connect(
        "mongodb://127.0.0.1:1/rofecare?replicaSet=rs0", server_selection_ms=200
    )
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.read("Patient", "p1")
        assert raised.value.headers == {"Retry-After": "5"}
        with pytest.raises(StoreUnavailable):
            await store.open()
    finally:
        await store.close()
