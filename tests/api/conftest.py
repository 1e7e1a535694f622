"""API tests drive the real ASGI app (lifespan included) on a real SQLite file in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.config import Settings
from tests.api.auth_helpers import ADMIN_PASSWORD, bootstrap, password_token, secure_client

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-1"}],
        "name": [{"family": "Okafor", "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1984-03-02",
    }
    body.update(extra)
    return body


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {
            "value": 72,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    body.update(extra)
    return body


def marital_text_parameter(**extra: Any) -> dict[str, Any]:
    """A custom SearchParameter (Patient.maritalStatus.text), as a hospital might add."""
    body: dict[str, Any] = {
        "resourceType": "SearchParameter",
        "id": "patient-marital-text",
        "url": "http://rofecare.example/fhir/SearchParameter/patient-marital-text",
        "name": "marital-text",
        "status": "active",
        "description": "Marital status as text",
        "code": "marital-text",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.maritalStatus.text",
    }
    body.update(extra)
    return body


def make_client(tmp_path: Path, **settings: Any) -> TestClient:
    """The app with authentication off unless asked (the FHIR behaviour under test is the
    same; tests/api/test_auth_*.py and tests/e2e/test_smart_*.py test it with tokens), and
    profile validation off unless asked (the engine's tests write minimal resources; the
    profile tests turn it on)."""
    settings.setdefault("auth_enabled", False)
    settings.setdefault("profile_validation", "off")
    app = build_app(Settings(data_dir=tmp_path, **settings))
    return TestClient(app, base_url="http://testserver", raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as test_client:
        yield test_client


@pytest.fixture
def created(client: TestClient) -> dict[str, Any]:
    response = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    assert response.status_code == 201
    resource: dict[str, Any] = response.json()
    return resource


def assert_outcome(
    response: Any, status: int, code: str | None = None, expression: str | None = None
) -> dict[str, Any]:
    """The response is an OperationOutcome with this status, Rofecare code and path."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if code is not None:
        codes = [
            coding["code"]
            for issue in outcome["issue"]
            for coding in issue.get("details", {}).get("coding", [])
        ]
        assert code in codes, outcome
    if expression is not None:
        paths = [path for issue in outcome["issue"] for path in issue.get("expression", [])]
        assert expression in paths, outcome
    return outcome


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    """The app with authentication on, after its first start (admin user, console client)."""
    with secure_client(tmp_path) as client:
        bootstrap(client)
        yield client


@pytest.fixture
def admin(server: TestClient) -> str:
    """An access token of the first administrator (password grant, user/*.cruds)."""
    token: str = password_token(server, "admin", ADMIN_PASSWORD)["access_token"]
    return token
