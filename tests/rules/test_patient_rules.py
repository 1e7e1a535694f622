"""Patient context rules: each allowed and refused through REST and a transaction, and
the guarded ones under simultaneous writes (exactly one wins)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.config import Settings
from fhir_server.core import Core, build_core
from fhir_server.errors import Conflict
from tests.api.conftest import make_client
from tests.rules.conftest import (
    FHIR_JSON,
    MR,
    MRN_SYSTEM,
    create,
    encounter,
    hospital_patient,
    keys,
    practitioner,
    transaction,
)


def test_a_medical_record_number_belongs_to_one_patient_per_system(
    enforced: TestClient,
) -> None:
    first = create(enforced, hospital_patient("MRN-1"))
    duplicate = enforced.post("/fhir/Patient", json=hospital_patient("MRN-1"), headers=FHIR_JSON)
    assert duplicate.status_code == 409
    assert "rofecare-1901" in keys(duplicate.json())
    assert duplicate.json()["issue"][0]["expression"] == ["Patient.identifier[0]"]
    assert first["id"] in duplicate.json()["issue"][0]["diagnostics"]
    # The same number in another hospital's system, or not typed MR, is another identifier.
    other_system = hospital_patient("MRN-1")
    other_system["identifier"][0]["system"] = "http://partner.example.org/mrn"
    create(enforced, other_system)
    not_mr = hospital_patient("MRN-2")
    not_mr["identifier"].append({"system": MRN_SYSTEM, "value": "MRN-1"})
    create(enforced, not_mr)
    # A patient keeps its own number through updates.
    again = enforced.put(
        f"/fhir/Patient/{first['id']}",
        json={**hospital_patient("MRN-1"), "id": first["id"], "gender": "other"},
        headers=FHIR_JSON,
    )
    assert again.status_code == 200, again.text
    holders = enforced.get(
        "/fhir/Patient",
        params={
            "identifier": f"{MRN_SYSTEM}|MRN-1",
            "identifier:of-type": "http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-1",
        },
    )
    assert [entry["resource"]["id"] for entry in holders.json()["entry"]] == [first["id"]]


def test_escaped_characters_in_a_medical_record_number_are_matched_exactly(
    enforced: TestClient,
) -> None:
    create(enforced, hospital_patient("A|B,C$D\\E"))
    create(enforced, hospital_patient("A"))
    again = enforced.post("/fhir/Patient", json=hospital_patient("A|B,C$D\\E"), headers=FHIR_JSON)
    assert again.status_code == 409 and "rofecare-1901" in keys(again.json())


def test_two_patients_with_one_number_in_a_transaction_write_nothing(
    enforced: TestClient,
) -> None:
    bundle = transaction(
        ("urn:uuid:1", hospital_patient("MRN-7")), ("urn:uuid:2", hospital_patient("MRN-7"))
    )
    answer = enforced.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 409 and "rofecare-1901" in keys(answer.json())
    assert enforced.get("/fhir/Patient").json()["total"] == 0


def admitted(client: TestClient) -> tuple[str, str]:
    patient = create(client, hospital_patient("MRN-ADM"))
    doctor = create(client, practitioner())
    return patient["id"], doctor["id"]


def test_at_most_one_active_admission_per_patient(enforced: TestClient) -> None:
    patient, doctor = admitted(enforced)
    first = create(enforced, encounter(patient, doctor, "IMP", "in-progress"))
    second = enforced.post(
        "/fhir/Encounter", json=encounter(patient, doctor, "IMP", "arrived"), headers=FHIR_JSON
    )
    assert second.status_code == 409 and "rofecare-1902" in keys(second.json())
    assert first["id"] in second.json()["issue"][0]["diagnostics"]
    # Outpatient visits and planned admissions do not count; neither do other patients'.
    create(enforced, encounter(patient, doctor, "AMB", "in-progress"))
    create(enforced, encounter(patient, doctor, "IMP", "planned"))
    other = create(enforced, hospital_patient("MRN-OTHER"))
    create(enforced, encounter(other["id"], doctor, "IMP", "in-progress"))
    # The admission itself may change while active; once discharged, a new one may start.
    still = enforced.put(
        f"/fhir/Encounter/{first['id']}",
        json={**first, "status": "onleave"},
        headers=FHIR_JSON,
    )
    assert still.status_code == 200, still.text
    discharged = {**still.json(), "status": "finished"}
    assert (
        enforced.put(
            f"/fhir/Encounter/{first['id']}", json=discharged, headers=FHIR_JSON
        ).status_code
        == 200
    )
    create(enforced, encounter(patient, doctor, "IMP", "in-progress"))


def test_two_admissions_in_one_transaction_write_nothing(enforced: TestClient) -> None:
    patient, doctor = admitted(enforced)
    # Two admissions at once in one transaction are refused, and nothing is written.
    double = transaction(
        ("urn:uuid:a", encounter(patient, doctor, "ACUTE", "in-progress")),
        ("urn:uuid:b", encounter(patient, doctor, "IMP", "triaged")),
    )
    refused = enforced.post("/fhir", json=double, headers=FHIR_JSON)
    assert refused.status_code == 409 and "rofecare-1902" in keys(refused.json())
    search = enforced.get("/fhir/Encounter", params={"subject": f"Patient/{patient}"})
    assert search.json()["total"] == 0


def test_a_visit_names_a_patient_and_practitioners_of_this_server(enforced: TestClient) -> None:
    patient, doctor = admitted(enforced)
    create(enforced, encounter(patient, doctor, "AMB", "in-progress"))
    nobody = enforced.post(
        "/fhir/Encounter", json=encounter("nobody", doctor, "AMB", "in-progress"), headers=FHIR_JSON
    )
    assert nobody.status_code == 422 and "rofecare-1903" in keys(nobody.json())
    assert nobody.json()["issue"][0]["expression"] == ["Encounter.subject"]
    ghost = enforced.post(
        "/fhir/Encounter", json=encounter(patient, "ghost", "AMB", "in-progress"), headers=FHIR_JSON
    )
    assert ghost.status_code == 422
    assert ghost.json()["issue"][0]["expression"] == ["Encounter.participant[0].individual"]
    # Another server's practitioner is that server's business.
    remote = encounter(patient, doctor, "AMB", "in-progress")
    remote["participant"][0]["individual"] = {
        "reference": "https://partner.example.org/fhir/Practitioner/9"
    }
    create(enforced, remote)


@pytest.mark.parametrize(("mode", "status"), [("warn", 201), ("off", 201), ("enforce", 409)])
def test_the_mode_decides_whether_a_broken_rule_refuses(
    tmp_path: Path, mode: str, status: int
) -> None:
    with make_client(tmp_path, profile_validation=mode) as client:
        create(client, hospital_patient("MRN-9"))
        again = client.post("/fhir/Patient", json=hospital_patient("MRN-9"), headers=FHIR_JSON)
        assert again.status_code == status


def test_warn_mode_answers_the_broken_rule_as_a_warning_on_every_door(tmp_path: Path) -> None:
    """Accepted in warn mode, a write that breaks a hospital rule tells its client so: in
    the OperationOutcome it asked for, in its Bundle entry's ``response.outcome``, and in
    ``$validate``; a write that breaks nothing carries no outcome."""
    as_outcome = {**FHIR_JSON, "Prefer": "return=OperationOutcome"}
    with make_client(tmp_path, profile_validation="warn") as client:
        create(client, hospital_patient("MRN-W"))
        answer = client.post("/fhir/Patient", json=hospital_patient("MRN-W"), headers=as_outcome)
        assert answer.status_code == 201
        issues = answer.json()["issue"]
        assert [issue["severity"] for issue in issues] == ["information", "warning"]
        assert "rofecare-1901" in keys(answer.json())
        plain = client.post("/fhir/Patient", json=hospital_patient("MRN-W"), headers=FHIR_JSON)
        assert plain.status_code == 201 and plain.json()["resourceType"] == "Patient"

        entries = [
            {"resource": hospital_patient(mrn), "request": {"method": "POST", "url": "Patient"}}
            for mrn in ("MRN-W", "MRN-CLEAN")
        ]
        for kind in ("batch", "transaction"):
            for entry in entries:
                entry["resource"]["identifier"][0]["value"] += "-"  # a fresh pair each time
            entries[0]["resource"]["identifier"][0]["value"] = "MRN-W"
            response = client.post(
                "/fhir", json={"resourceType": "Bundle", "type": kind, "entry": entries}
            ).json()
            broken, clean = (entry["response"] for entry in response["entry"])
            assert broken["status"].startswith("201") and clean["status"].startswith("201")
            assert {issue["severity"] for issue in broken["outcome"]["issue"]} == {"warning"}
            assert "rofecare-1901" in keys(broken["outcome"])
            assert "outcome" not in clean

        validated = client.post(
            "/fhir/Patient/$validate", json=hospital_patient("MRN-W"), headers=FHIR_JSON
        ).json()
        assert "rofecare-1901" in keys(validated)
        assert {issue["severity"] for issue in validated["issue"]} == {"warning"}


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    core = build_core(Settings(data_dir=tmp_path, profile_validation="enforce"))
    await core.store.open()
    await core.service.reload_search_parameters()
    try:
        yield core
    finally:
        await core.audit.stop()
        await core.store.close()


async def simultaneously(core: Core, resources: list[dict[str, Any]]) -> list[Any]:
    """Create ``resources`` at once: every rule check runs before any write commits."""
    return await asyncio.gather(
        *(core.service.create(r["resourceType"], r) for r in resources), return_exceptions=True
    )


async def test_of_two_simultaneous_registrations_of_one_number_exactly_one_wins(
    core: Core,
) -> None:
    outcomes = await simultaneously(core, [hospital_patient("MRN-RACE")] * 4)
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 3 and all(isinstance(o, Conflict) for o in refused)
    assert {o.rofecare_code for o in refused} == {"rofecare-1901"}


async def test_of_two_simultaneous_admissions_exactly_one_wins(core: Core) -> None:
    patient = await core.service.create("Patient", hospital_patient("MRN-R2"))
    doctor = await core.service.create("Practitioner", practitioner())
    pid, did = patient.version.resource_id, doctor.version.resource_id
    outcomes = await simultaneously(
        core,
        [
            encounter(pid, did, "IMP", "in-progress"),
            encounter(pid, did, "ACUTE", "arrived"),
            encounter(pid, did, "AMB", "in-progress"),
        ],
    )
    assert [type(o).__name__ for o in outcomes].count("Conflict") == 1
    assert not isinstance(outcomes[2], Exception)
    assert MR  # the fixtures' MR coding is what makes the numbers above medical records


def test_validate_runs_the_rules_and_writes_nothing(enforced: TestClient) -> None:
    create(enforced, hospital_patient("MRN-V"))
    answer = enforced.post(
        "/fhir/Patient/$validate", json=hospital_patient("MRN-V"), headers=FHIR_JSON
    )
    assert answer.status_code == 200 and "rofecare-1901" in keys(answer.json())
    fine = enforced.post(
        "/fhir/Patient/$validate", json=hospital_patient("MRN-V2"), headers=FHIR_JSON
    )
    assert fine.json()["issue"][0]["severity"] == "information"
    assert enforced.get("/fhir/Patient").json()["total"] == 1


# -- claims: what the two rules above hold, whatever the indexing and the mode ---------------


def test_a_number_is_free_again_once_its_patient_gives_it_up(enforced: TestClient) -> None:
    first = create(enforced, hospital_patient("MRN-FREE"))
    renumbered = {**hospital_patient("MRN-OTHER"), "id": first["id"]}
    moved = enforced.put(f"/fhir/Patient/{first['id']}", json=renumbered, headers=FHIR_JSON)
    assert moved.status_code == 200, moved.text
    second = create(enforced, hospital_patient("MRN-FREE"))
    refused = enforced.post("/fhir/Patient", json=hospital_patient("MRN-OTHER"), headers=FHIR_JSON)
    assert refused.status_code == 409 and first["id"] in refused.text
    assert enforced.delete(f"/fhir/Patient/{second['id']}").status_code in (200, 204)
    create(enforced, hospital_patient("MRN-FREE"))


def test_a_number_belongs_to_one_patient_with_search_indexing_off(tmp_path: Path) -> None:
    """The rule reads claims, not the search index: it holds without one."""
    with make_client(tmp_path, profile_validation="enforce", search_indexing=False) as client:
        first = create(client, hospital_patient("MRN-NOINDEX"))
        again = client.post(
            "/fhir/Patient", json=hospital_patient("MRN-NOINDEX"), headers=FHIR_JSON
        )
        assert again.status_code == 409 and first["id"] in again.text


def test_numbers_written_with_the_rules_off_count_once_they_are_back(tmp_path: Path) -> None:
    with make_client(tmp_path, profile_validation="off") as client:
        first = create(client, hospital_patient("MRN-OFF"))
    with make_client(tmp_path, profile_validation="enforce") as client:
        again = client.post("/fhir/Patient", json=hospital_patient("MRN-OFF"), headers=FHIR_JSON)
        assert again.status_code == 409 and first["id"] in again.text


def test_reindex_gives_a_database_from_before_claims_its_claims(tmp_path: Path) -> None:
    with make_client(tmp_path, profile_validation="enforce") as client:
        first = create(client, hospital_patient("MRN-OLD"))
    database = tmp_path / "rofecare.sqlite3"
    with sqlite3.connect(database) as connection:  # as schema 6 left it: no claims
        connection.execute("DELETE FROM resource_claim")
        connection.execute("UPDATE store_meta SET value = '6' WHERE key = 'schema_version'")
    with make_client(tmp_path, profile_validation="enforce") as client:
        unknown = client.post("/fhir/Patient", json=hospital_patient("MRN-OLD"), headers=FHIR_JSON)
        assert unknown.status_code == 201  # what reindex is for: the old number went unseen
        client.delete(f"/fhir/Patient/{unknown.json()['id']}")
    reindexed = subprocess.run(
        [sys.executable, "-m", "fhir_server", "reindex", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "ROFECARE_PROFILE_VALIDATION": "enforce"},
        timeout=120,
        check=False,
    )
    assert reindexed.returncode == 0, reindexed.stderr
    with make_client(tmp_path, profile_validation="enforce") as client:
        again = client.post("/fhir/Patient", json=hospital_patient("MRN-OLD"), headers=FHIR_JSON)
        assert again.status_code == 409 and first["id"] in again.text


def test_opening_a_database_from_before_claims_says_to_reindex(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(tmp_path, profile_validation="enforce") as client:
        create(client, hospital_patient("MRN-WARN"))
    with sqlite3.connect(tmp_path / "rofecare.sqlite3") as connection:
        connection.execute("DROP TABLE resource_claim")
        connection.execute("UPDATE store_meta SET value = '6' WHERE key = 'schema_version'")
    warnings = caplog.at_level(logging.WARNING, logger="rofecare.storage")
    with warnings, make_client(tmp_path, profile_validation="enforce") as client:
        create(client, hospital_patient("MRN-NEW"))
    assert any("rofecare reindex" in message for message in caplog.messages)
