"""Sorted paging in index order: every page, forwards and back, in the exact R4 order.

Multi-valued parameters sort by their lowest value ascending and highest descending,
resources without a value come last (in creation order), and ties are broken by creation
order in the sort direction. Walking ``next`` links and then ``previous`` links must give
each resource exactly once, in that order and its reverse.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON

PATIENTS: list[dict[str, Any]] = [
    {"id": "a", "given": ["Zed", "Amy"], "birthDate": "1990"},
    {"id": "b", "given": ["Bea"], "birthDate": "1985-06-01"},
    {"id": "c", "given": ["Éva"]},
    {"id": "d", "given": ["Amy"], "birthDate": "1990"},
    {"id": "e", "birthDate": "2001-01-01"},
    {"id": "f", "given": ["Carl", "Yves"], "birthDate": "1985-06-01"},
    {"id": "g"},
    {"id": "h", "given": ["bea"], "birthDate": "1970-12-31"},
    {"id": "i", "given": ["Dan"]},
    {"id": "j"},
    {"id": "k", "given": ["Zed"], "birthDate": "2001"},
]
# Expected orders, worked out by hand from the rules above (creation order: a..k).
ORDERS = {
    "given": ["a", "d", "b", "h", "f", "i", "c", "k", "e", "g", "j"],
    "-given": ["k", "a", "f", "c", "i", "h", "b", "d", "e", "g", "j"],
    # birthDate 2001 covers the whole year: it starts with 2001-01-01 and ends after it.
    "birthdate": ["h", "b", "f", "a", "d", "e", "k", "c", "g", "i", "j"],
    "-birthdate": ["k", "e", "d", "a", "f", "b", "h", "c", "g", "i", "j"],
}


@pytest.fixture
def patients(client: TestClient) -> TestClient:
    for item in PATIENTS:
        body: dict[str, Any] = {"resourceType": "Patient", "id": item["id"]}
        if "given" in item:
            body["name"] = [{"given": item["given"]}]
        if "birthDate" in item:
            body["birthDate"] = item["birthDate"]
        response = client.put(f"/fhir/Patient/{item['id']}", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
    return client


def _page(client: TestClient, url: str) -> tuple[list[str], dict[str, str]]:
    bundle = client.get(url).json()
    ids = [entry["resource"]["id"] for entry in bundle.get("entry", [])]
    return ids, {link["relation"]: link["url"] for link in bundle["link"]}


@pytest.mark.parametrize("sort", sorted(ORDERS))
def test_walk_forwards_and_back(patients: TestClient, sort: str) -> None:
    ids, links = _page(patients, f"/fhir/Patient?_sort={sort}&_count=3")
    pages = [ids]
    while "next" in links:
        ids, links = _page(patients, links["next"])
        pages.append(ids)
    assert [i for page in pages for i in page] == ORDERS[sort]
    assert [len(page) for page in pages] == [3, 3, 3, 2]
    back = [pages[-1]]
    while "previous" in links:
        ids, links = _page(patients, links["previous"])
        back.append(ids)
    assert back == list(reversed(pages))
