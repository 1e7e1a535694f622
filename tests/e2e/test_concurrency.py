"""Concurrent writers on one resource, against the real server."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import requests

from tests.e2e.fhir import (
    FHIR_JSON,
    Json,
    entry_key,
    follow_pages,
    marker_of,
    patient,
    requests_fetch,
    tagged,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def run_in_threads(count: int, work: Callable[[int, requests.Session], T]) -> list[T]:
    """Run ``work(index, session)`` on ``count`` threads released together by a barrier."""
    barrier = threading.Barrier(count, timeout=10)

    def run(index: int) -> T:
        with requests.Session() as session:  # one per thread: a Session is not thread-safe
            barrier.wait()
            return work(index, session)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def create_patient(fhir_base: str) -> Json:
    response = requests.post(f"{fhir_base}/Patient", json=patient("v1"), timeout=10)
    assert response.status_code == 201, response.text
    created: Json = response.json()
    return created


def whole_history(fhir_base: str, resource_id: str) -> list[Json]:
    with requests.Session() as session:
        first = requests_fetch(session)(f"{fhir_base}/Patient/{resource_id}/_history?_count=50")
        pages = follow_pages(first, requests_fetch(session))
    return [entry for page in pages for entry in page.get("entry", [])]


def test_if_match_race_has_exactly_one_winner(fhir_base: str) -> None:
    created = create_patient(fhir_base)
    url = f"{fhir_base}/Patient/{created['id']}"

    def put(index: int, session: requests.Session) -> tuple[int, str]:
        body = tagged({**created, "active": True}, f"writer-{index}")
        response = session.put(
            url,
            json=body,
            headers={"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'},
            timeout=10,
        )
        return response.status_code, response.text

    results = run_in_threads(10, put)

    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 1, 412: 9}, results
    winner = next(index for index, (status, _) in enumerate(results) if status == 200)
    current = requests.get(url, timeout=10).json()
    assert current["meta"]["versionId"] == "2"
    assert marker_of(current) == f"writer-{winner}"
    assert [entry_key(e)[2] for e in whole_history(fhir_base, created["id"])] == [2, 1]


def test_unconditional_puts_lose_no_version(fhir_base: str) -> None:
    threads, puts_each = 8, 20
    created = create_patient(fhir_base)
    url = f"{fhir_base}/Patient/{created['id']}"

    def put_many(index: int, session: requests.Session) -> list[tuple[int, str, str]]:
        answers = []
        for n in range(puts_each):
            body = tagged({**created}, f"t{index}-{n}")
            response = session.put(url, json=body, headers={"Content-Type": FHIR_JSON}, timeout=10)
            answers.append(
                (response.status_code, response.headers.get("ETag", ""), body_text(response))
            )
        return answers

    results = [answer for answers in run_in_threads(threads, put_many) for answer in answers]
    acknowledged = [
        int(etag.removeprefix("W/").strip('"')) for status, etag, _ in results if status == 200
    ]
    refused = [(status, text) for status, _, text in results if status != 200]

    # Whatever was acknowledged got its own version and is in the history, newest first.
    assert len(acknowledged) == len(set(acknowledged)), "two PUTs were given the same version"
    last = 1 + len(acknowledged)
    assert sorted(acknowledged) == list(range(2, last + 1))
    current = requests.get(url, timeout=10).json()
    assert current["meta"]["versionId"] == str(last)
    entries = whole_history(fhir_base, created["id"])
    assert [entry_key(e)[2] for e in entries] == list(range(last, 0, -1))
    modified = [e["response"]["lastModified"] for e in entries]
    assert modified == sorted(modified, reverse=True)

    # And every PUT was acknowledged: a write without If-Match has no precondition to fail.
    assert not refused, (
        f"{len(refused)} of {len(results)} unconditional PUTs were refused "
        f"(final version {last}, expected {1 + threads * puts_each}); first: {refused[0]}"
    )
    assert last == 1 + threads * puts_each == 161
    markers = [marker_of(e["resource"]) for e in entries[:-1]]
    assert sorted(markers) == sorted(f"t{i}-{n}" for i in range(threads) for n in range(puts_each))


def body_text(response: requests.Response) -> str:
    return response.text if response.status_code != 200 else ""


def test_concurrent_conditional_writes_create_one_resource(fhir_base: str) -> None:
    """20 conditional updates and 20 conditional creates (header and query forms) at once."""
    value = f"race-{threading.get_ident()}"
    body = patient(identifier=value)
    condition = f"identifier=urn:oid:2.999.1.1|{value}"
    headers = {"Content-Type": FHIR_JSON}

    def write(index: int, session: requests.Session) -> int:
        if index % 3 == 0:
            url = f"{fhir_base}/Patient?{condition}"
            return session.put(url, json=body, headers=headers, timeout=30).status_code
        if index % 3 == 1:
            extra = {"If-None-Exist": condition}
            url = f"{fhir_base}/Patient"
            return session.post(
                url, json=body, headers={**headers, **extra}, timeout=30
            ).status_code
        url = f"{fhir_base}/Patient?{condition}"
        return session.post(url, json=body, headers=headers, timeout=30).status_code

    statuses = Counter(run_in_threads(30, write))
    assert statuses[201] == 1, statuses
    assert statuses[200] == 29, statuses
    found = requests.post(
        f"{fhir_base}/Patient",
        json=body,
        headers={**headers, "If-None-Exist": condition},
        timeout=10,
    )
    assert found.status_code == 200
