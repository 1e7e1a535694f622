"""History at instance, type and system level (https://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, observation, patient


def _versions(bundle: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            entry["request"]["method"],
            entry["fullUrl"].rsplit("/", 1)[1],
            entry["response"]["etag"],
        )
        for entry in bundle.get("entry", [])
    ]


def test_instance_history_newest_first_with_deletes(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    client.put(f"/fhir/Patient/{pid}", json={**patient(active=True), "id": pid}, headers=FHIR_JSON)
    client.delete(f"/fhir/Patient/{pid}")
    bundle = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    assert _versions(bundle) == [
        ("DELETE", pid, 'W/"3"'),
        ("PUT", pid, 'W/"2"'),
        ("POST", pid, 'W/"1"'),
    ]
    delete, put, post = bundle["entry"]
    assert "resource" not in delete
    assert put["resource"]["active"] is True
    assert post["request"]["url"] == "Patient"
    assert put["request"]["url"] == f"Patient/{pid}"
    assert post["response"]["status"].startswith("201")


def test_type_and_system_history(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    oid = client.post(
        "/fhir/Observation", json=observation(f"Patient/{pid}"), headers=FHIR_JSON
    ).json()["id"]
    types = [e["resource"]["resourceType"] for e in client.get("/fhir/_history").json()["entry"]]
    # Newest first; each write's AuditEvent is committed with it (written after it).
    assert types == ["AuditEvent", "Observation", "AuditEvent", "Patient"]
    only = client.get("/fhir/Observation/_history").json()
    assert [e["resource"]["id"] for e in only["entry"]] == [oid]


def test_paging_with_next_links_is_stable_under_writes(client: TestClient) -> None:
    ids = [
        client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
        for _ in range(7)
    ]
    page = client.get("/fhir/Patient/_history?_count=3").json()
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        seen += [entry["resource"]["id"] for entry in page["entry"]]
        if pages == 1:  # a write between pages must not shift what the next page holds
            client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert links["self"].startswith("http://testserver/fhir/Patient/_history")
        if "next" not in links:
            break
        page = client.get(links["next"]).json()
    assert pages == 3
    assert seen == list(reversed(ids))


def test_since_and_at(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    time.sleep(0.01)
    second = client.put(
        f"/fhir/Patient/{pid}", json={**patient(active=True), "id": pid}, headers=FHIR_JSON
    ).json()
    since = second["meta"]["lastUpdated"]
    bundle = client.get(f"/fhir/Patient/{pid}/_history", params={"_since": since}).json()
    assert _versions(bundle) == [("PUT", pid, 'W/"2"')]
    at = client.get(f"/fhir/Patient/{pid}/_history", params={"_at": since}).json()
    assert _versions(at) == [("PUT", pid, 'W/"2"')]
    year = since[:4]
    whole_year = client.get(f"/fhir/Patient/{pid}/_history", params={"_at": year}).json()
    assert len(whole_year["entry"]) == 2
    long_ago = client.get(f"/fhir/Patient/{pid}/_history", params={"_at": "1999"}).json()
    assert long_ago.get("entry", []) == []


def test_bad_history_parameters(client: TestClient, created: dict[str, Any]) -> None:
    url = f"/fhir/Patient/{created['id']}/_history"
    assert_outcome(client.get(url, params={"_since": "last tuesday"}), 400, "rofecare-1601")
    assert_outcome(client.get(url, params={"_at": "2024-13"}), 400, "rofecare-1602")
    assert_outcome(client.get(url, params={"_count": "-1"}), 400, "rofecare-1603")
    assert_outcome(client.get(url, params={"_count": "1e9"}), 400, "rofecare-1603")
    assert_outcome(client.get(url, params={"_cursor": "1;DROP"}), 400, "rofecare-1604")
    assert_outcome(client.get("/fhir/Patient/nobody/_history"), 404, "rofecare-1102")
    assert_outcome(client.get("/fhir/Nope/_history"), 404, "rofecare-1101")


def test_count_is_capped(tmp_path: Any) -> None:
    from tests.api.conftest import make_client

    with make_client(tmp_path, max_page_size=2) as client:
        for _ in range(3):
            client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        bundle = client.get("/fhir/_history?_count=500").json()
        assert len(bundle["entry"]) == 2
        assert any(link["relation"] == "next" for link in bundle["link"])
