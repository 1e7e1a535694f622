"""Fixtures of the hospital-rule tests: a client with profiles and rules enforced, and
resources that pass the Rofecare profiles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_client

FHIR_JSON = {"Content-Type": "application/fhir+json"}
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
MRN_SYSTEM = "http://rofecare.com/fhir/sid/mrn"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture
def enforced(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, profile_validation="enforce") as client:
        yield client


def hospital_patient(mrn: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"type": MR, "system": MRN_SYSTEM, "value": mrn}],
        "name": [{"family": "Diallo", "given": ["Awa"]}],
        "gender": "female",
        "birthDate": "1984-06-02",
        **extra,
    }


def practitioner(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "name": [{"family": "Ndiaye"}], **extra}


def encounter(
    patient_id: str, practitioner_id: str, klass: str, status: str, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": ACT_CODE, "code": klass},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}],
        "period": {"start": "2026-12-01T08:00:00Z"},
        **extra,
    }


def create(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def keys(outcome: dict[str, Any]) -> set[str]:
    """The rofecare codes and constraint keys an OperationOutcome carries."""
    return {
        coding["code"]
        for issue in outcome.get("issue", [])
        for coding in issue.get("details", {}).get("coding", [])
    }


def transaction(*entries: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle creating ``entries`` ((fullUrl, resource) pairs)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for full_url, resource in entries
        ],
    }
