"""Formats and subsets: _format, Accept, _pretty, _summary, _elements."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, patient

SUBSETTED = "SUBSETTED"


def _tags(resource: dict[str, Any]) -> list[str]:
    return [tag["code"] for tag in resource.get("meta", {}).get("tag", [])]


def test_json_media_types(client: TestClient, created: dict[str, Any]) -> None:
    url = f"/fhir/Patient/{created['id']}"
    default = client.get(url)
    assert default.headers["content-type"] == "application/fhir+json; charset=utf-8"
    plain = client.get(url, headers={"Accept": "application/json"})
    assert plain.headers["content-type"].startswith("application/json")
    browser = client.get(url, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 200
    for value in ("json", "application/fhir+json", "application/json"):
        assert client.get(url, params={"_format": value}).status_code == 200
    created_plain = client.post(
        "/fhir/Patient", json=patient(), headers={"Content-Type": "application/json"}
    )
    assert created_plain.status_code == 201


def test_xml_is_not_acceptable(client: TestClient, created: dict[str, Any]) -> None:
    url = f"/fhir/Patient/{created['id']}"
    assert_outcome(client.get(url, params={"_format": "xml"}), 406, "rofecare-1501")
    assert_outcome(
        client.get(url, headers={"Accept": "application/fhir+xml"}), 406, "rofecare-1502"
    )
    assert_outcome(client.get("/fhir/metadata", params={"_format": "xml"}), 406)
    xml_body = client.post(
        "/fhir/Patient",
        content=b"<Patient xmlns='http://hl7.org/fhir'/>",
        headers={"Content-Type": "application/fhir+xml"},
    )
    assert_outcome(xml_body, 415, "rofecare-1503")


def test_pretty(client: TestClient, created: dict[str, Any]) -> None:
    url = f"/fhir/Patient/{created['id']}"
    pretty = client.get(url, params={"_pretty": "true"})
    assert pretty.text.startswith('{\n  "resourceType"')
    assert pretty.json() == created
    assert "\n" not in client.get(url).text


def test_summary_modes(client: TestClient) -> None:
    body = patient(
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ada</div>'},
        contact=[{"name": {"family": "Okafor"}}],
        photo=[{"contentType": "image/png", "data": "AAAA"}],
        active=True,
    )
    pid = client.post("/fhir/Patient", json=body, headers=FHIR_JSON).json()["id"]
    url = f"/fhir/Patient/{pid}"
    summary = client.get(url, params={"_summary": "true"}).json()
    assert SUBSETTED in _tags(summary)
    assert {"name", "gender", "birthDate", "identifier", "active"} <= summary.keys()
    assert "contact" not in summary and "photo" not in summary and "text" not in summary
    text = client.get(url, params={"_summary": "text"}).json()
    assert "text" in text and "name" not in text and text["id"] == pid
    data = client.get(url, params={"_summary": "data"}).json()
    assert "text" not in data and "contact" in data and SUBSETTED in _tags(data)
    full = client.get(url, params={"_summary": "false"}).json()
    assert "contact" in full and SUBSETTED not in _tags(full)
    assert_outcome(client.get(url, params={"_summary": "count"}), 400, "rofecare-1508")
    assert_outcome(client.get(url, params={"_summary": "maybe"}), 400, "rofecare-1508")


def test_summary_keeps_mandatory_and_summary_children(client: TestClient) -> None:
    from tests.api.conftest import observation

    body = observation(
        "Patient/x",
        note=[{"text": "not a summary element"}],
        component=[
            {
                "code": {"text": "systolic"},
                "valueQuantity": {"value": 120},
                "interpretation": [{"text": "normal"}],
            }
        ],
    )
    oid = client.post("/fhir/Observation", json=body, headers=FHIR_JSON).json()["id"]
    summary = client.get(f"/fhir/Observation/{oid}", params={"_summary": "true"}).json()
    assert summary["status"] == "final" and "code" in summary and "valueQuantity" in summary
    assert "note" not in summary
    assert summary["component"][0]["code"] == {"text": "systolic"}
    assert summary["component"][0]["valueQuantity"] == {"value": 120}


def test_elements(client: TestClient, created: dict[str, Any]) -> None:
    url = f"/fhir/Patient/{created['id']}"
    subset = client.get(url, params={"_elements": "name,gender"}).json()
    assert set(subset) == {"resourceType", "id", "meta", "name", "gender"}
    assert SUBSETTED in _tags(subset)
    vread = client.get(f"{url}/_history/1", params={"_elements": "birthDate"}).json()
    assert set(vread) == {"resourceType", "id", "meta", "birthDate"}
    obs_body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueString": "v",
        "note": [{"text": "n"}],
    }
    oid = client.post("/fhir/Observation", json=obs_body, headers=FHIR_JSON).json()["id"]
    obs = client.get(f"/fhir/Observation/{oid}", params={"_elements": "value"}).json()
    # Mandatory elements (status, code) stay; value[x] matches valueString.
    assert set(obs) == {"resourceType", "id", "meta", "status", "code", "valueString"}
