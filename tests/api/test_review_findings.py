"""Regression tests for faults found in review: each once gave a 500, a stall or bad data."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, make_client, patient

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (patient(name=["x"]), "Patient.name[0]"),
        (patient(name=[None]), "Patient.name[0]"),
        (patient(contact=[7]), "Patient.contact[0]"),
        ({"resourceType": "Patient", "meta": ["a"]}, "Patient.meta"),
        ({"resourceType": "Patient", "meta": {"tag": ["x"]}}, "Patient.meta.tag[0]"),
        ({"resourceType": "Observation", "status": "final", "code": "txt"}, "Observation.code"),
    ],
)
def test_scalars_where_objects_belong_are_refused(
    client: TestClient, body: dict[str, Any], path: str
) -> None:
    resource_type = body["resourceType"]
    response = client.post(f"/fhir/{resource_type}", json=body, headers=FHIR_JSON)
    assert_outcome(response, 400, "rofecare-1401", path)


def test_a_huge_invalid_body_is_answered_quickly_with_capped_issues(client: TestClient) -> None:
    body = {"resourceType": "Patient", "name": [{"use": 1}] * 200_000}
    started = time.monotonic()
    response = client.post("/fhir/Patient", content=orjson.dumps(body), headers=FHIR_JSON)
    elapsed = time.monotonic() - started
    outcome = assert_outcome(response, 400, "rofecare-1401")
    assert len(outcome["issue"]) == 50
    assert elapsed < 30  # not a timing assertion of speed: it once took minutes and gigabytes


def test_patch_cannot_grow_a_resource_past_the_limit(tmp_path: Any) -> None:
    with make_client(tmp_path, max_body_bytes=64 * 1024) as client:
        pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
        # A small patch whose copies make the resource far larger than any accepted body.
        growing = [{"op": "replace", "path": "/name/0/family", "value": "x" * 10_000}]
        growing += [{"op": "copy", "from": "/name/0", "path": "/name/-"}] * 10
        response = client.patch(f"/fhir/Patient/{pid}", json=growing, headers=JSON_PATCH)
        assert_outcome(response, 413, "rofecare-1507")
        many = [{"op": "copy", "from": "/a", "path": "/b"}] * 1001
        assert_outcome(
            client.patch(f"/fhir/Patient/{pid}", json=many, headers=JSON_PATCH),
            413,
            "rofecare-1304",
        )
        assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_conditional_update_rules(client: TestClient) -> None:
    body = patient(identifier=[{"system": "urn:c", "value": "1"}])
    pinned = client.put(
        "/fhir/Patient?identifier=urn:c|1", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert_outcome(pinned, 412, "rofecare-1207")
    other = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    hijack = client.put(
        "/fhir/Patient?identifier=urn:c|1", json={**body, "id": other}, headers=FHIR_JSON
    )
    assert_outcome(hijack, 412, "rofecare-1209")
    for bad in (b"[]", b'"x"'):
        response = client.put("/fhir/Patient?identifier=urn:c|1", content=bad, headers=FHIR_JSON)
        assert_outcome(response, 400)
    formatted = client.put(
        "/fhir/Patient?identifier=urn:c|1&_format=json&_pretty=true", json=body, headers=FHIR_JSON
    )
    assert formatted.status_code == 201


def test_validate_with_malformed_parameters(client: TestClient) -> None:
    for parameters in (5, True, "x"):
        body = {"resourceType": "Parameters", "parameter": parameters}
        response = client.post("/fhir/Patient/$validate", json=body, headers=FHIR_JSON)
        assert response.status_code == 400, response.text


def test_count_zero_has_no_next_link(client: TestClient, created: dict[str, Any]) -> None:
    bundle = client.get(f"/fhir/Patient/{created['id']}/_history?_count=0").json()
    assert [link["relation"] for link in bundle["link"]] == ["self"]
    assert bundle.get("entry", []) == []


def test_links_never_carry_a_forged_host(client: TestClient) -> None:
    forged = {"Host": "evil.example/phish?x="}
    response = client.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **forged})
    assert response.status_code == 201
    assert "phish" not in response.headers["location"]
    history = client.get("/fhir/Patient/_history", headers=forged).json()
    assert all("phish" not in link["url"] for link in history["link"])
    assert all("phish" not in entry["fullUrl"] for entry in history["entry"])


def test_configured_base_url_is_used_for_every_link(tmp_path: Any) -> None:
    with make_client(tmp_path, public_base_url="https://fhir.hospital.example/fhir") as client:
        client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        bundle = client.get("/fhir/_history?_count=1", headers={"Host": "evil.example"}).json()
        urls = [link["url"] for link in bundle["link"]] + [e["fullUrl"] for e in bundle["entry"]]
        assert all(url.startswith("https://fhir.hospital.example/fhir/") for url in urls)


def test_types_without_a_rest_endpoint(client: TestClient) -> None:
    parameters = {"resourceType": "Parameters", "parameter": []}
    assert_outcome(client.post("/fhir/Parameters", json=parameters, headers=FHIR_JSON), 404)
    assert_outcome(client.get("/fhir/OperationOutcome/x"), 404)


def test_a_storage_failure_is_a_503_with_retry_after(tmp_path: Any) -> None:
    with make_client(tmp_path) as client:
        store = client.app.state.store  # type: ignore[attr-defined]

        def disk_full(*arguments: Any) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        store._write_batch = disk_full
        response = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        assert_outcome(response, 503, "rofecare-1510")
        assert response.headers["retry-after"] == "5"
        assert "disk" not in response.text
