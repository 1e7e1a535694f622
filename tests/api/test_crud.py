"""Instance and type interactions (https://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, observation, patient


def test_create_assigns_id_version_and_headers(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", json=patient(id="client-id", meta={"versionId": "9"}), headers=FHIR_JSON
    )
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-id"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == (
        f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    )
    assert "last-modified" in response.headers


def test_read_and_vread(client: TestClient, created: dict[str, Any]) -> None:
    pid = created["id"]
    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["etag"] == 'W/"1"'
    updated = client.put(
        f"/fhir/Patient/{pid}", json={**patient(gender="other"), "id": pid}, headers=FHIR_JSON
    )
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    first = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert first.status_code == 200 and first.json()["gender"] == "female"
    second = client.get(f"/fhir/Patient/{pid}/_history/2")
    assert second.json()["gender"] == "other"
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/3"), 404, "rofecare-1104")
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/x"), 404, "rofecare-1104")


def test_read_unknown_is_404(client: TestClient) -> None:
    assert_outcome(client.get("/fhir/Patient/does-not-exist"), 404, "rofecare-1102")


def test_update_as_create_with_client_id(client: TestClient) -> None:
    response = client.put(
        "/fhir/Patient/mrn-42", json={**patient(), "id": "mrn-42"}, headers=FHIR_JSON
    )
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "1"
    assert response.headers["location"].endswith("/fhir/Patient/mrn-42/_history/1")


def test_update_as_create_can_be_switched_off(tmp_path: Any) -> None:
    from tests.api.conftest import make_client

    with make_client(tmp_path, allow_client_ids=False) as client:
        response = client.put("/fhir/Patient/a", json={**patient(), "id": "a"}, headers=FHIR_JSON)
        assert_outcome(response, 405, "rofecare-1204")
        statement = client.get("/fhir/metadata").json()
        assert statement["rest"][0]["resource"][0]["updateCreate"] is False


def test_update_id_rules(client: TestClient, created: dict[str, Any]) -> None:
    pid = created["id"]
    missing = client.put(f"/fhir/Patient/{pid}", json=patient(), headers=FHIR_JSON)
    assert_outcome(missing, 400, "rofecare-1202", "Patient.id")
    other = client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": "other"}, headers=FHIR_JSON)
    assert_outcome(other, 400, "rofecare-1203", "Patient.id")
    wrong_type = client.put(
        f"/fhir/Patient/{pid}", json={**observation("Patient/x"), "id": pid}, headers=FHIR_JSON
    )
    assert_outcome(wrong_type, 400, "rofecare-1401", "resourceType")


def test_delete_then_read_is_410_and_delete_is_idempotent(
    client: TestClient, created: dict[str, Any]
) -> None:
    pid = created["id"]
    deleted = client.delete(f"/fhir/Patient/{pid}")
    assert deleted.status_code == 200
    assert deleted.headers["etag"] == 'W/"2"'
    gone = assert_outcome(client.get(f"/fhir/Patient/{pid}"), 410, "rofecare-1103")
    assert gone["issue"][0]["code"] == "deleted"
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 200
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert len(history["entry"]) == 2  # the second delete added no version
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/2"), 410, "rofecare-1103")
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    # Updating a deleted resource brings it back as a new version.
    revived = client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers=FHIR_JSON)
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


def test_delete_unknown_is_404(client: TestClient) -> None:
    assert_outcome(client.delete("/fhir/Patient/nobody"), 404, "rofecare-1102")


def test_if_match_optimistic_locking(client: TestClient, created: dict[str, Any]) -> None:
    pid = created["id"]
    body = {**patient(active=True), "id": pid}
    ok = client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(
        f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert_outcome(stale, 412, "rofecare-1207")
    bad = client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": "v1"})
    assert_outcome(bad, 400, "rofecare-1509")
    stale_delete = client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"1"'})
    assert_outcome(stale_delete, 412, "rofecare-1207")
    assert client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"2"'}).status_code == 200


def test_conditional_read(client: TestClient, created: dict[str, Any]) -> None:
    pid = created["id"]
    first = client.get(f"/fhir/Patient/{pid}")
    not_modified = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == 'W/"1"'
    changed = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"0"'})
    assert changed.status_code == 200
    since = client.get(
        f"/fhir/Patient/{pid}", headers={"If-Modified-Since": first.headers["last-modified"]}
    )
    assert since.status_code == 304
    earlier = client.get(
        f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert earlier.status_code == 200
    garbage = client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": "yesterday"})
    assert garbage.status_code == 200


def test_conditional_create_of_a_type_without_rules_is_written_first(
    client: TestClient,
) -> None:
    """No hospital rule reads Organizations: the create is written at once, the store
    refusing it if a match exists, and only then searched (services/resources.py)."""
    condition = {"If-None-Exist": "identifier=urn:org|ORG-1"}
    body = {
        "resourceType": "Organization",
        "identifier": [{"system": "urn:org", "value": "ORG-1"}],
        "name": "District Hospital",
    }
    first = client.post("/fhir/Organization", json=body, headers={**FHIR_JSON, **condition})
    assert first.status_code == 201
    again = client.post("/fhir/Organization", json=body, headers={**FHIR_JSON, **condition})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    client.post("/fhir/Organization", json=body, headers=FHIR_JSON)  # a second one
    ambiguous = client.post("/fhir/Organization", json=body, headers={**FHIR_JSON, **condition})
    assert_outcome(ambiguous, 412, "rofecare-1201")
    total = client.get("/fhir/Organization?identifier=urn:org|ORG-1&_summary=count").json()
    assert total["total"] == 2  # neither conditional create wrote a third


def test_prefer_return(client: TestClient) -> None:
    minimal = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    outcome = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"}
    )
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    full = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=representation"}
    )
    assert full.json()["resourceType"] == "Patient"


def test_conditional_create(client: TestClient) -> None:
    condition = {"If-None-Exist": "identifier=http://hospital.example/mrn|MRN-1"}
    first = client.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **condition})
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **condition})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)  # a duplicate MRN
    ambiguous = client.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **condition})
    assert_outcome(ambiguous, 412, "rofecare-1201")
    unsupported = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "nickname=Okafor"}
    )
    assert_outcome(unsupported, 400, "rofecare-2003")


def test_conditional_update(client: TestClient) -> None:
    url = "/fhir/Patient?identifier=http://hospital.example/mrn|MRN-7"
    body = patient(identifier=[{"system": "http://hospital.example/mrn", "value": "MRN-7"}])
    created = client.put(url, json=body, headers=FHIR_JSON)
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(url, json={**body, "active": False}, headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    by_id = client.put(f"/fhir/Patient?_id={pid}", json={**body, "active": True}, headers=FHIR_JSON)
    assert by_id.json()["meta"]["versionId"] == "3"
    wrong_id = client.put(url, json={**body, "id": "someone-else"}, headers=FHIR_JSON)
    assert_outcome(wrong_id, 400, "rofecare-1203")
    client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert_outcome(client.put(url, json=body, headers=FHIR_JSON), 412, "rofecare-1205")
    assert_outcome(client.put("/fhir/Patient", json=body, headers=FHIR_JSON), 405, "rofecare-1605")


def test_conditional_delete(client: TestClient) -> None:
    body = patient(identifier=[{"system": "urn:mrn", "value": "D-1"}])
    pid = client.post("/fhir/Patient", json=body, headers=FHIR_JSON).json()["id"]
    nothing = client.delete("/fhir/Patient?identifier=urn:mrn|nobody")
    assert nothing.status_code == 200
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    deleted = client.delete("/fhir/Patient?identifier=urn:mrn|D-1")
    assert deleted.status_code == 200
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert_outcome(client.delete("/fhir/Patient?identifier=D-1"), 412, "rofecare-1206")
    assert_outcome(client.delete("/fhir/Patient"), 405, "rofecare-1605")


def test_patch_with_json_patch(client: TestClient, created: dict[str, Any]) -> None:
    pid = created["id"]
    patch_type = {"Content-Type": "application/json-patch+json"}
    ops = [
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/name/0/given/-", "value": "Chi"},
    ]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=patch_type)
    assert response.status_code == 200
    body = response.json()
    assert body["gender"] == "male" and body["name"][0]["given"] == ["Ada", "Chi"]
    assert body["meta"]["versionId"] == "2"
    failed_test = [{"op": "test", "path": "/gender", "value": "female"}]
    assert_outcome(
        client.patch(f"/fhir/Patient/{pid}", json=failed_test, headers=patch_type),
        422,
        "rofecare-1302",
    )
    change_id = [{"op": "replace", "path": "/id", "value": "x"}]
    assert_outcome(
        client.patch(f"/fhir/Patient/{pid}", json=change_id, headers=patch_type),
        422,
        "rofecare-1303",
    )
    invalid_result = [{"op": "replace", "path": "/gender", "value": "robot"}]
    assert_outcome(
        client.patch(f"/fhir/Patient/{pid}", json=invalid_result, headers=patch_type),
        400,
        "rofecare-1401",
        "Patient.gender",
    )
    not_ops = client.patch(f"/fhir/Patient/{pid}", json={"op": "add"}, headers=patch_type)
    assert_outcome(not_ops, 400, "rofecare-1301")
    bad_op = client.patch(f"/fhir/Patient/{pid}", json=[{"op": "jump"}], headers=patch_type)
    assert bad_op.status_code in (400, 422)
    wrong_type = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=FHIR_JSON)
    assert_outcome(wrong_type, 415, "rofecare-1503")
    stale = client.patch(
        f"/fhir/Patient/{pid}", json=ops, headers={**patch_type, "If-Match": 'W/"1"'}
    )
    assert_outcome(stale, 412, "rofecare-1207")
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "2"


def test_observation_round_trip(client: TestClient, created: dict[str, Any]) -> None:
    response = client.post(
        "/fhir/Observation", json=observation(f"Patient/{created['id']}"), headers=FHIR_JSON
    )
    assert response.status_code == 201
    oid = response.json()["id"]
    read = client.get(f"/fhir/Observation/{oid}").json()
    assert read["valueQuantity"]["value"] == 72
    assert read["subject"]["reference"] == f"Patient/{created['id']}"


def test_conditional_create_from_the_query_string(client: TestClient) -> None:
    url = "/fhir/Patient?identifier=http://hospital.example/mrn|MRN-1"
    first = client.post(url, json=patient(), headers=FHIR_JSON)
    assert first.status_code == 201
    again = client.post(url + "&_pretty=true", json=patient(), headers=FHIR_JSON)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    unsupported = client.post("/fhir/Patient?nickname=Okafor", json=patient(), headers=FHIR_JSON)
    assert_outcome(unsupported, 400, "rofecare-2003")
    both = client.post(
        url, json=patient(), headers={**FHIR_JSON, "If-None-Exist": "identifier=MRN-1"}
    )
    assert_outcome(both, 400, "rofecare-1606")
