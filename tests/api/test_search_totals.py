"""Bundle.total: exact when cheap, always when asked (https://hl7.org/fhir/R4/search.html#total).

Without ``_total`` a searchset carries the total only when at most
``ROFECARE_SEARCH_TOTAL_LIMIT`` resources match: counting a large result set cost more than
finding its first page (token search at 100,000 resources 2.9 -> 1.3 ms in process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_client, patient

LIMIT = 3


@pytest.fixture
def small_limit(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, search_total_limit=LIMIT) as client:
        yield client


def _fill(client: TestClient, family: str, count: int) -> None:
    for _ in range(count):
        body = patient(name=[{"family": family, "given": ["Ada"]}])
        assert client.post("/fhir/Patient", json=body).status_code == 201


def _search(client: TestClient, query: str) -> dict[str, Any]:
    response = client.get(f"/fhir/Patient?{query}")
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


@pytest.mark.parametrize("matches", [0, 1, LIMIT])
def test_a_small_result_set_carries_its_exact_total(small_limit: TestClient, matches: int) -> None:
    _fill(small_limit, "Small", matches)
    assert _search(small_limit, "family=Small")["total"] == matches


def test_a_large_result_set_has_no_total_unless_asked(small_limit: TestClient) -> None:
    _fill(small_limit, "Large", LIMIT + 2)
    default = _search(small_limit, "family=Large&_count=2")
    assert "total" not in default
    assert len(default["entry"]) == 2
    assert any(link["relation"] == "next" for link in default["link"])
    for mode in ("accurate", "estimate"):
        assert _search(small_limit, f"family=Large&_total={mode}")["total"] == LIMIT + 2
    assert "total" not in _search(small_limit, "family=Small&_total=none")
    counted = _search(small_limit, "family=Large&_summary=count")
    assert counted["total"] == LIMIT + 2 and "entry" not in counted


def test_the_bound_holds_for_every_counting_shape(small_limit: TestClient) -> None:
    """The count is taken from an index (one value, a range of dates made of two
    alternatives) or from the resource table (no parameter): each stops at the bound."""
    for year in ("1950", "1960", "1970", "1980", "1990"):
        body = patient(birthDate=f"{year}-06-01", name=[{"family": "Dates"}])
        assert small_limit.post("/fhir/Patient", json=body).status_code == 201
    assert "total" not in _search(small_limit, "birthdate=ge1950&birthdate=lt2000")
    assert _search(small_limit, "birthdate=ge1970&birthdate=lt1990")["total"] == 2
    assert "total" not in _search(small_limit, "_count=1")
    assert _search(small_limit, "_total=accurate")["total"] == 5
    assert _search(small_limit, "birthdate=ge1950&_total=accurate")["total"] == 5
