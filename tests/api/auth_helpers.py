"""Helpers for tests of the app with authentication on (the default of a real server)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fhir_server.app import build_app
from fhir_server.config import Settings
from fhir_server.services.identity import Identity

ADMIN_PASSWORD = "Adm1n-correct-horse!"
BASE = "http://testserver/fhir"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CHEAP_HASHING = {"password_hash_time_cost": 1, "password_hash_memory_kib": 1024}


def secure_client(tmp_path: Path, **settings: Any) -> TestClient:
    """An app with authentication on (cheap argon2 parameters: tests hash many passwords)."""
    app = build_app(
        Settings(
            data_dir=tmp_path,
            auth_enabled=True,
            **{"profile_validation": "off", **CHEAP_HASHING, **settings},
        )
    )
    return TestClient(app, base_url="http://testserver", raise_server_exceptions=False)


def identity(client: TestClient) -> Identity:
    found: Identity = client.app.state.identity  # type: ignore[attr-defined]
    return found


def bootstrap(client: TestClient) -> None:
    """What the first ``rofecare serve`` does: the admin user and the console client."""
    assert client.portal is not None
    client.portal.call(identity(client).users.bootstrap, ADMIN_PASSWORD)


def add_user(
    client: TestClient, username: str, roles: tuple[str, ...], fhir_user: str | None = None
) -> str:
    password = f"Ward-{len(username)}-pass-2024!"
    assert client.portal is not None

    async def add() -> None:
        await identity(client).users.add_user(username, password, roles, fhir_user=fhir_user)

    client.portal.call(add)
    return password


def password_token(
    client: TestClient,
    username: str,
    password: str,
    scope: str = "user/*.cruds openid fhirUser offline_access",
) -> dict[str, Any]:
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "rofecare-console",
            "username": username,
            "password": password,
            "scope": scope,
        },
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def audit_events(client: TestClient, token: str, query: str = "") -> list[dict[str, Any]]:
    """AuditEvents, read with an auditor's token (flushes the queued ones first)."""
    assert client.portal is not None
    client.portal.call(_flush, client)
    response = client.get(f"/fhir/AuditEvent?_count=1000{query}", headers=bearer(token))
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


async def _flush(client: TestClient) -> None:
    trail = client.app.state.audit  # type: ignore[attr-defined]
    await trail.flush()
