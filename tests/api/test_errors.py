"""Bad and hostile input: every answer is an OperationOutcome with the right status, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, make_client, patient


def test_malformed_json(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON
    )
    assert_outcome(response, 400, "rofecare-1506")


@pytest.mark.parametrize("body", [b"", b"   ", b"null", b"[]", b'"Patient"', b"42"])
def test_bodies_that_are_not_resources(client: TestClient, body: bytes) -> None:
    response = client.post("/fhir/Patient", content=body, headers=FHIR_JSON)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_wrong_types_name_their_paths(client: TestClient) -> None:
    body = patient(active="yes", birthDate=19840302, name=[{"given": "Ada"}])
    outcome = assert_outcome(
        client.post("/fhir/Patient", json=body, headers=FHIR_JSON), 400, "rofecare-1401"
    )
    paths = {path for issue in outcome["issue"] for path in issue.get("expression", [])}
    assert {"Patient.active", "Patient.birthDate", "Patient.name[0].given"} <= paths


def test_unknown_elements_are_refused_with_their_path(client: TestClient) -> None:
    body = patient(favouriteColour="blue", name=[{"family": "Okafor", "nickname": "A"}])
    outcome = assert_outcome(
        client.post("/fhir/Patient", json=body, headers=FHIR_JSON), 400, "rofecare-1401"
    )
    paths = {path for issue in outcome["issue"] for path in issue.get("expression", [])}
    assert {"Patient.favouriteColour", "Patient.name[0].nickname"} <= paths


def test_invalid_codes_and_primitives(client: TestClient) -> None:
    cases = {
        "Patient.gender": patient(gender="F"),
        "Patient.birthDate": patient(birthDate="1984-02-30x"),
        "Patient.id": {**patient(), "id": "bad id!"},
    }
    for path, body in cases.items():
        assert_outcome(client.post("/fhir/Patient", json=body, headers=FHIR_JSON), 400, None, path)


def test_a_newline_does_not_sneak_past_a_pattern(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", json=patient(birthDate="1984-03-02\n"), headers=FHIR_JSON
    )
    assert_outcome(response, 400, "rofecare-1401", "Patient.birthDate")


def test_resource_type_mismatch_and_unknown_types(client: TestClient) -> None:
    assert_outcome(
        client.post("/fhir/Observation", json=patient(), headers=FHIR_JSON),
        400,
        "rofecare-1401",
        "resourceType",
    )
    assert_outcome(
        client.post("/fhir/Spaceship", json=patient(), headers=FHIR_JSON), 404, "rofecare-1101"
    )
    assert_outcome(client.get("/fhir/Spaceship/1"), 404, "rofecare-1101")
    assert_outcome(client.get("/fhir/Resource/1"), 404, "rofecare-1101")
    no_type = {"name": [{"family": "x"}]}
    assert_outcome(
        client.post("/fhir/Patient", json=no_type, headers=FHIR_JSON), 400, "rofecare-1401"
    )
    medplum_only = {"resourceType": "Project", "name": "x"}
    assert_outcome(client.post("/fhir/Project", json=medplum_only, headers=FHIR_JSON), 404)


def test_body_over_the_limit_is_413(tmp_path: Any) -> None:
    with make_client(tmp_path) as client:
        blob = (
            b'{"resourceType":"Binary","contentType":"text/plain","data":"'
            + b"A" * (50 * 1024 * 1024)
            + b'"}'
        )
        assert_outcome(
            client.post("/fhir/Binary", content=blob, headers=FHIR_JSON), 413, "rofecare-1507"
        )

        def chunks() -> Any:  # no Content-Length: the limit holds while streaming
            for _ in range(12):
                yield b" " * (1024 * 1024)

        streamed = client.post("/fhir/Binary", content=chunks(), headers=FHIR_JSON)
        assert_outcome(streamed, 413, "rofecare-1507")
        assert client.get("/fhir/_history").json().get("entry", []) == []


def test_body_limit_is_configurable(tmp_path: Any) -> None:
    with make_client(tmp_path, max_body_bytes=2048) as client:
        big = patient(name=[{"family": "x" * 4000}])
        assert_outcome(client.post("/fhir/Patient", json=big, headers=FHIR_JSON), 413)
        assert client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).status_code == 201


def test_deep_nesting(client: TestClient) -> None:
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert_outcome(client.post("/fhir/Patient", content=deep, headers=FHIR_JSON), 400)
    nested: dict[str, Any] = {"url": "http://x", "valueString": "leaf"}
    for _ in range(200):
        nested = {"url": "http://x", "extension": [nested]}
    body = patient(extension=[nested])
    outcome = assert_outcome(
        client.post("/fhir/Patient", json=body, headers=FHIR_JSON), 400, "rofecare-1401"
    )
    assert "nested" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "bad_id",
    [
        "a..b%2F..%2Fetc",
        "1' OR '1'='1",
        "1;DROP TABLE resource_version",
        "x" * 65,
        "%00",
        "a b",
        "\u00e9t\u00e9",
    ],
)
def test_hostile_ids(client: TestClient, bad_id: str) -> None:
    for response in (
        client.get(f"/fhir/Patient/{bad_id}"),
        client.put(f"/fhir/Patient/{bad_id}", json={**patient(), "id": bad_id}, headers=FHIR_JSON),
        client.delete(f"/fhir/Patient/{bad_id}"),
        client.get(f"/fhir/Patient/{bad_id}/_history"),
    ):
        assert response.status_code in (400, 404), (bad_id, response.status_code, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


def test_injection_strings_are_just_data(client: TestClient) -> None:
    evil = "Robert'); DROP TABLE resource_version;--"
    body = patient(name=[{"family": evil}], identifier=[{"system": "urn:x", "value": evil}])
    created = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert created.status_code == 201
    again = client.get(f"/fhir/Patient/{created.json()['id']}").json()
    assert again["name"][0]["family"] == evil
    condition = {"If-None-Exist": f"identifier=urn:x|{evil}"}
    match = client.post("/fhir/Patient", json=body, headers={**FHIR_JSON, **condition})
    assert match.status_code == 200 and match.json()["id"] == created.json()["id"]


def test_malformed_conditions(client: TestClient) -> None:
    for condition in ("identifier=", "identifier=a|b|c", "_id=../x", "&&", "identifier:of-type=x"):
        response = client.post(
            "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": condition}
        )
        assert response.status_code == 400, (condition, response.text)


def test_unknown_routes_and_methods(client: TestClient) -> None:
    assert_outcome(client.get("/fhir/Patient/a/b/c/d/e"), 404)
    assert_outcome(client.post("/fhir/Patient/abc", json=patient(), headers=FHIR_JSON), 405)
    assert_outcome(client.post("/fhir/metadata", json={}, headers=FHIR_JSON), 405)
    assert_outcome(client.patch("/fhir/Patient", json=[], headers=FHIR_JSON), 405)


def test_invalid_content_length(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", content=b"{}", headers={**FHIR_JSON, "Content-Length": "abc"}
    )
    assert response.status_code == 400


def test_a_failed_write_leaves_nothing(client: TestClient) -> None:
    client.post("/fhir/Patient", json=patient(gender="nope"), headers=FHIR_JSON)
    client.post("/fhir/Patient", content=b"{", headers=FHIR_JSON)
    assert client.get("/fhir/_history").json().get("entry", []) == []


def test_an_unexpected_error_is_a_500_outcome_without_internals(tmp_path: Any) -> None:
    with make_client(tmp_path) as client:
        service = client.app.state.service  # type: ignore[attr-defined]

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret internal detail")

        service.read = broken
        response = client.get("/fhir/Patient/abc")
        outcome = assert_outcome(response, 500, "rofecare-1500")
        assert "secret" not in response.text
        assert "request id" in outcome["issue"][0]["diagnostics"]


def test_contained_resources_are_explained_against_their_own_type(client: TestClient) -> None:
    body = patient(contained=[{"resourceType": "Organization", "id": "o", "colour": "red"}])
    outcome = assert_outcome(
        client.post("/fhir/Patient", json=body, headers=FHIR_JSON), 400, "rofecare-1401"
    )
    paths = {path for issue in outcome["issue"] for path in issue.get("expression", [])}
    assert "Patient.contained[0].colour" in paths
