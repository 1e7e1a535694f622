"""CapabilityStatement and $validate."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, patient


def test_capability_statement_claims_what_is_implemented(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["format"] == ["json", "application/fhir+json"]
    assert statement["patchFormat"] == ["application/json-patch+json"]
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    assert [i["code"] for i in rest["interaction"]] == ["history-system", "search-system"]
    types = {resource["type"]: resource for resource in rest["resource"]}
    assert len(types) == 144 and "Project" not in types
    assert "Parameters" not in types and "OperationOutcome" not in types  # no REST endpoint
    patient_caps = types["Patient"]
    codes = {interaction["code"] for interaction in patient_caps["interaction"]}
    assert codes == {
        "read", "vread", "update", "patch", "delete",
        "history-instance", "history-type", "create", "search-type",
    }  # fmt: skip
    parameters = {p["name"]: p["type"] for p in patient_caps["searchParam"]}
    assert parameters["name"] == "string" and parameters["birthdate"] == "date"
    assert parameters["_id"] == "token" and parameters["_lastUpdated"] == "date"
    assert "Patient:general-practitioner" in patient_caps["searchInclude"]
    assert patient_caps["versioning"] == "versioned-update"
    assert patient_caps["conditionalDelete"] == "single"
    assert patient_caps["operation"][0]["name"] == "validate"
    # The statement itself is valid R4.
    response = client.post("/fhir/CapabilityStatement/$validate", json=statement, headers=FHIR_JSON)
    assert response.json()["issue"][0]["severity"] == "information"


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_validate_valid_and_invalid_without_writing(client: TestClient) -> None:
    ok = client.post("/fhir/Patient/$validate", json=patient(), headers=FHIR_JSON)
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = client.post(
        "/fhir/Patient/$validate", json=patient(gender="x", extra=1), headers=FHIR_JSON
    )
    assert bad.status_code == 200
    outcome = bad.json()
    paths = {path for issue in outcome["issue"] for path in issue.get("expression", [])}
    assert {"Patient.gender", "Patient.extra"} <= paths
    assert all(issue["severity"] == "error" for issue in outcome["issue"])
    # The same OperationOutcome as a create would give.
    create = client.post("/fhir/Patient", json=patient(gender="x", extra=1), headers=FHIR_JSON)
    assert create.status_code == 400 and create.json()["issue"] == outcome["issue"]
    assert client.get("/fhir/Patient/_history").json().get("entry", []) == []


def test_validate_with_parameters_and_modes(client: TestClient, created: dict[str, Any]) -> None:
    pid = created["id"]
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {**patient(), "id": pid}},
            {"name": "mode", "valueCode": "update"},
        ],
    }
    ok = client.post(f"/fhir/Patient/{pid}/$validate", json=parameters, headers=FHIR_JSON)
    assert ok.json()["issue"][0]["severity"] == "information"
    mismatch = client.post("/fhir/Patient/other/$validate", json=parameters, headers=FHIR_JSON)
    assert mismatch.json()["issue"][0]["severity"] == "error"
    type_level = client.post("/fhir/Patient/$validate", json=parameters, headers=FHIR_JSON)
    assert_outcome(type_level, 400, "rofecare-1702")
    delete_mode = {
        "resourceType": "Parameters",
        "parameter": [{"name": "mode", "valueCode": "delete"}],
    }
    missing = client.post("/fhir/Patient/nobody/$validate", json=delete_mode, headers=FHIR_JSON)
    assert missing.json()["issue"][0]["code"] == "not-found"
    fine = client.post(f"/fhir/Patient/{pid}/$validate", json=delete_mode, headers=FHIR_JSON)
    assert fine.json()["issue"][0]["severity"] == "information"
    bad_mode = client.post(
        "/fhir/Patient/$validate?mode=destroy", json=patient(), headers=FHIR_JSON
    )
    assert_outcome(bad_mode, 400, "rofecare-1704")
    unknown_profile = client.post(
        "/fhir/Patient/$validate?profile=http://example.org/StructureDefinition/x",
        json=patient(),
        headers=FHIR_JSON,
    )
    assert unknown_profile.json()["issue"][0]["code"] == "not-supported"
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_validate_by_get_is_405(client: TestClient, created: dict[str, Any]) -> None:
    for url in ("/fhir/Patient/$validate", f"/fhir/Patient/{created['id']}/$validate"):
        assert_outcome(client.get(url), 405, "rofecare-1405")
