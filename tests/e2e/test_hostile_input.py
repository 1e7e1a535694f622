"""Hostile input over a real socket: the server answers an OperationOutcome and keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.e2e.fhir import FHIR_JSON as FHIR_JSON_TYPE
from tests.e2e.fhir import patient

FHIR_JSON = {"Content-Type": FHIR_JSON_TYPE}

pytestmark = pytest.mark.e2e


def _outcome(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_50_mb_body_is_refused_with_413(fhir_base: str) -> None:
    blob = (
        b'{"resourceType":"Binary","contentType":"text/plain","data":"'
        + b"A" * (50 * 1024 * 1024)
        + b'"}'
    )
    _outcome(requests.post(f"{fhir_base}/Binary", data=blob, headers=FHIR_JSON, timeout=60), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(50):
            yield b" " * (1024 * 1024)

    _outcome(
        requests.post(f"{fhir_base}/Binary", data=chunks(), headers=FHIR_JSON, timeout=60), 413
    )


def test_deep_nesting_and_garbage(fhir_base: str) -> None:
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    _outcome(requests.post(f"{fhir_base}/Patient", data=deep, headers=FHIR_JSON, timeout=10), 400)
    garbage = bytes(range(256)) * 40
    _outcome(
        requests.post(f"{fhir_base}/Patient", data=garbage, headers=FHIR_JSON, timeout=10), 400
    )


@pytest.mark.parametrize(
    "bad_id", ["1' OR '1'='1", "x;DROP TABLE resource_version", "%2e%2e%2fetc"]
)
def test_injection_ids(fhir_base: str, bad_id: str) -> None:
    response = requests.get(f"{fhir_base}/Patient/{bad_id}", timeout=10)
    assert response.status_code in (400, 404)
    assert response.json()["resourceType"] == "OperationOutcome"


def test_the_server_still_serves_afterwards(fhir_base: str) -> None:
    created = requests.post(f"{fhir_base}/Patient", json=patient(), headers=FHIR_JSON, timeout=10)
    assert created.status_code == 201
