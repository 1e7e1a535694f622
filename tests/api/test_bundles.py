"""POST /fhir with transaction and batch Bundles: the HTTP answer (http.html#transaction)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, make_client, observation, patient

PATIENT_URL = "urn:uuid:4f1c2e2a-9b7d-4c53-8e0a-2d6f7b1c3a55"


def bundle(entries: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post_entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_transaction_response_describes_each_entry(client: TestClient) -> None:
    response = client.post(
        "/fhir",
        json=bundle([post_entry(patient(), PATIENT_URL), post_entry(observation(PATIENT_URL))]),
        headers=FHIR_JSON,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    first, second = answer["entry"]
    for entry in (first, second):
        assert entry["response"]["status"] == "201 Created"
        assert entry["response"]["etag"] == 'W/"1"'
        assert entry["response"]["lastModified"].endswith("Z")
        assert "resource" not in entry  # minimal unless asked for
    kind, patient_id, _, version = first["response"]["location"].split("/")
    assert (kind, version) == ("Patient", "1")
    assert first["fullUrl"] == f"http://testserver/fhir/Patient/{patient_id}"
    obs_id = second["response"]["location"].split("/")[1]
    stored = client.get(f"/fhir/Observation/{obs_id}").json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"


def test_prefer_representation_returns_the_resources(client: TestClient) -> None:
    response = client.post(
        "/fhir",
        json=bundle([post_entry(patient())]),
        headers={**FHIR_JSON, "Prefer": "return=representation"},
    )
    resource = response.json()["entry"][0]["resource"]
    assert resource["resourceType"] == "Patient" and resource["meta"]["versionId"] == "1"


def test_a_failed_transaction_names_the_entry_and_stores_nothing(client: TestClient) -> None:
    bad = patient(gender="sometimes")
    response = client.post(
        "/fhir",
        json=bundle([post_entry(patient()), post_entry(bad), post_entry(patient())]),
        headers=FHIR_JSON,
    )
    outcome = assert_outcome(response, 400, "rofecare-1401")
    paths = [path for issue in outcome["issue"] for path in issue.get("expression", [])]
    assert any(path.startswith("Bundle.entry[1].resource.gender") for path in paths), paths
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_not_a_transaction_or_batch_is_400(client: TestClient) -> None:
    assert_outcome(client.post("/fhir", json=patient(), headers=FHIR_JSON), 400, "rofecare-2401")
    document = {"resourceType": "Bundle", "type": "document", "entry": []}
    assert_outcome(client.post("/fhir/", json=document, headers=FHIR_JSON), 400, "rofecare-2401")
    entries_not_a_list = {"resourceType": "Bundle", "type": "batch", "entry": {"x": 1}}
    assert_outcome(
        client.post("/fhir", json=entries_not_a_list, headers=FHIR_JSON), 400, "rofecare-2402"
    )
    response = client.post("/fhir", content=b"{not json", headers=FHIR_JSON)
    assert_outcome(response, 400, "rofecare-1506")


def test_too_many_entries_is_413(tmp_path: Path) -> None:
    with make_client(tmp_path, max_bundle_entries=2) as small:
        entries = [post_entry(patient()) for _ in range(3)]
        for kind in ("transaction", "batch"):
            response = small.post("/fhir", json=bundle(entries, kind), headers=FHIR_JSON)
            assert_outcome(response, 413, "rofecare-2409", "Bundle.entry")
        assert small.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_batch_response_carries_each_entrys_outcome(client: TestClient) -> None:
    entries = [
        post_entry(patient()),
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        {"resource": patient(), "request": {"method": "POST"}},
        {"request": {"method": "GET", "url": "Patient?family=Okafor"}},
    ]
    response = client.post("/fhir", json=bundle(entries, "batch"), headers=FHIR_JSON)
    assert response.status_code == 200
    answers = response.json()["entry"]
    assert [a["response"]["status"] for a in answers] == [
        "201 Created",
        "404 Not Found",
        "400 Bad Request",
        "200 OK",
    ]
    outcome = answers[2]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[2].request.url"]
    searchset = answers[3]["resource"]
    assert searchset["type"] == "searchset" and searchset["total"] == 1


def test_a_batch_s_writes_are_audited_together_and_only_those_written(
    client: TestClient,
) -> None:
    """A group of batch writes commits with one AuditEvent (subtype batch) naming every
    resource it wrote, as a transaction's does; an entry that failed is in none."""

    def one(mrn: str) -> dict[str, Any]:
        return post_entry(
            patient(identifier=[{"system": "http://hospital.example/mrn", "value": mrn}])
        )

    invalid = post_entry({"resourceType": "Patient", "birthDate": "yesterday"})
    entries = [one("B-1"), invalid, one("B-2"), one("B-3")]
    answers = client.post("/fhir", json=bundle(entries, "batch"), headers=FHIR_JSON).json()
    locations = [a["response"].get("location") for a in answers["entry"]]
    written = {location.split("/_history")[0] for location in locations if location}
    assert len(written) == 3
    events = client.get("/fhir/AuditEvent", params={"subtype": "batch"}).json()
    (event,) = [item["resource"] for item in events["entry"]]
    named = {entity["what"]["reference"] for entity in event["entity"]}
    assert written <= named and all(name.startswith("Patient/") for name in named)
    assert event["action"] == "E"
    for reference in written:
        found = client.get("/fhir/AuditEvent", params={"entity": reference}).json()
        assert [item["resource"]["id"] for item in found["entry"]] == [event["id"]]


def test_patch_entry_takes_a_binary_json_patch(client: TestClient, created: dict[str, Any]) -> None:
    operations = [{"op": "replace", "path": "/gender", "value": "other"}]
    data = base64.b64encode(json.dumps(operations).encode()).decode()
    entry = {
        "resource": {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": data,
        },
        "request": {"method": "PATCH", "url": f"Patient/{created['id']}", "ifMatch": 'W/"1"'},
    }
    response = client.post("/fhir", json=bundle([entry]), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{created['id']}").json()["gender"] == "other"


def test_injection_strings_in_urls_and_conditions_are_plain_data(client: TestClient) -> None:
    hostile = "x' OR 1=1; DROP TABLE resource_current; --"
    entries = [
        {
            "resource": patient(),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"family={hostile}"},
        },
        {"request": {"method": "GET", "url": f"Patient?name={hostile}"}},
    ]
    response = client.post("/fhir", json=bundle(entries), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created", "200 OK"]
    bad_id = {"request": {"method": "DELETE", "url": "Patient/../../etc"}}
    assert_outcome(
        client.post("/fhir", json=bundle([bad_id]), headers=FHIR_JSON), 400, "rofecare-2402"
    )


def test_a_batch_follows_the_stored_search_parameters_once_not_per_entry(
    client: TestClient,
) -> None:
    """Each look is a query on the event loop; a transaction looks once, and so does a batch
    (a SearchParameter written meanwhile by another worker counts from the next request)."""
    store = client.app.state.store  # type: ignore[attr-defined]
    looks: list[str] = []
    latest_change = store.latest_change

    async def counted(resource_type: str) -> int:
        looks.append(resource_type)
        return int(await latest_change(resource_type))

    store.latest_change = counted
    entries = [post_entry(patient()) for _ in range(6)]
    response = client.post("/fhir", json=bundle(entries, "batch"), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created"] * 6
    assert looks.count("SearchParameter") == 1
