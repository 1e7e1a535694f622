"""Small FHIR helpers shared by the end-to-end tests: resource builders and history paging."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import requests

IDENTIFIER_SYSTEM = "urn:oid:2.999.1.1"  # an example OID arc, not a real registry
TAG_SYSTEM = "urn:rofecare:e2e"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"

Json = dict[str, Any]


def patient(marker: str | None = None, *, identifier: str | None = None) -> Json:
    body: Json = {
        "resourceType": "Patient",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": identifier or str(uuid.uuid4())}],
        "name": [{"family": "Lovelace", "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1990-12-10",
    }
    return tagged(body, marker)


def observation(patient_id: str, marker: str | None = None, *, kg: float = 72.5) -> Json:
    body: Json = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2024-03-05T10:00:00Z",
        "valueQuantity": {"value": kg, "unit": "kg", "system": UCUM, "code": "kg"},
    }
    return tagged(body, marker)


def tagged(body: Json, marker: str | None) -> Json:
    """``body`` carrying ``marker`` as a meta.tag, so a stored version can be told apart."""
    if marker is not None:
        body["meta"] = {"tag": [{"system": TAG_SYSTEM, "code": marker}]}
    return body


def marker_of(resource: Mapping[str, Any]) -> str | None:
    for tag in resource.get("meta", {}).get("tag", []):
        if tag.get("system") == TAG_SYSTEM:
            code: str = tag["code"]
            return code
    return None


def next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            url: str = link["url"]
            return url
    return None


def follow_pages(first: Json, fetch: Callable[[str], Json], limit: int = 1000) -> list[Json]:
    """Every page of a Bundle, following ``next`` links until there is none."""
    pages = [first]
    while (url := next_link(pages[-1])) is not None:
        assert len(pages) < limit, f"more than {limit} pages: the next links do not end"
        pages.append(fetch(url))
    return pages


def requests_fetch(session: requests.Session) -> Callable[[str], Json]:
    def fetch(url: str) -> Json:
        response = session.get(url, headers={"Accept": FHIR_JSON}, timeout=10)
        assert response.status_code == 200, (url, response.status_code, response.text)
        body: Json = response.json()
        return body

    return fetch


def entry_key(entry: Mapping[str, Any]) -> tuple[str, str, int]:
    """(type, id, version) of a history entry; works for deletions, which carry no resource."""
    full_url: str = entry["fullUrl"]
    resource_type, resource_id = full_url.rsplit("/", 2)[-2:]
    etag: str = entry["response"]["etag"]
    return resource_type, resource_id, int(etag.removeprefix("W/").strip('"'))


def assert_operation_outcome(response: requests.Response, code: str | None = None) -> Json:
    """The body is an OperationOutcome with an error issue (of issue ``code`` if given)."""
    assert response.headers["Content-Type"].startswith(FHIR_JSON), response.headers
    body: Json = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    severities = {issue["severity"] for issue in body["issue"]}
    assert severities & {"error", "fatal"}, body
    if code is not None:
        assert code in {issue["code"] for issue in body["issue"]}, body
    return body
