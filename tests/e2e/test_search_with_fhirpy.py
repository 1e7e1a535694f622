"""Search through a real FHIR client library (fhirpy) against ``rofecare serve``.

fhirpy builds the query strings, follows the ``next`` links page by page and reads the
``include`` entries, so this proves the searchset Bundles work for a client as written,
not only for our own assertions.
"""

from __future__ import annotations

import uuid

import pytest
import requests
from fhirpy import SyncFHIRClient

from tests.e2e.fhir import FHIR_JSON, TAG_SYSTEM, follow_pages, observation, patient

pytestmark = pytest.mark.e2e


def test_paged_search_with_include(client: SyncFHIRClient, fhir_base: str) -> None:
    marker = f"search-{uuid.uuid4().hex[:8]}"
    owner = client.resource(
        "Patient", **{k: v for k, v in patient(marker).items() if k != "resourceType"}
    )
    owner.save()
    weights = [60.0 + number for number in range(23)]
    for kg in weights:
        body = observation(owner.id, marker, kg=kg)
        client.resource(
            "Observation", **{k: v for k, v in body.items() if k != "resourceType"}
        ).save()

    search = (
        client.resources("Observation")
        .search(_tag=f"{TAG_SYSTEM}|{marker}", code="http://loinc.org|29463-7")
        .include("Observation", "subject")
        .sort("value-quantity")
        .limit(5)
    )
    found = search.fetch_all()  # fhirpy follows the next links itself
    assert [o["valueQuantity"]["value"] for o in found] == weights
    assert search.count() == 23

    first = search.fetch_raw()
    assert first["total"] == 23 and len(first.entry) == 6  # five matches and the patient
    included = [e for e in first.entry if e.search.mode == "include"]
    assert [e.resource.id for e in included] == [owner.id]

    # The same pages by their links, with the patient included on every page.
    session = requests.Session()

    def fetch(url: str) -> dict:
        response = session.get(url, headers={"Accept": FHIR_JSON}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    start = fetch(
        f"{fhir_base}/Observation?_tag={TAG_SYSTEM}|{marker}&_count=10&_include=Observation:subject"
    )
    pages = follow_pages(start, fetch)
    assert [len(page["entry"]) for page in pages] == [11, 11, 4]

    heavy = client.resources("Observation").search(
        _tag=f"{TAG_SYSTEM}|{marker}", **{"value-quantity": "ge80|http://unitsofmeasure.org|kg"}
    )
    assert heavy.count() == 3
    grams = client.resources("Observation").search(
        _tag=f"{TAG_SYSTEM}|{marker}", **{"value-quantity": "lt61000|http://unitsofmeasure.org|g"}
    )
    assert [o["valueQuantity"]["value"] for o in grams.fetch_all()] == [60.0]  # UCUM-canonical

    by_patient = (
        client.resources("Patient")
        .search(_id=owner.id)
        .revinclude("Observation", "subject")
        .fetch_raw()
    )
    assert len([e for e in by_patient.entry if e.search.mode == "include"]) == 23
