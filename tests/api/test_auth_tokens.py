"""Authentication on the FHIR doors: tokens, grants, and the attacks they must withstand."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jose import jwt

from fhir_server.app import build_app
from fhir_server.auth.keys import KeyRing, SigningKey
from fhir_server.auth.tokens import TokenIssuer
from fhir_server.config import Settings
from tests.api.auth_helpers import (
    ADMIN_PASSWORD,
    BASE,
    add_user,
    audit_events,
    bearer,
    bootstrap,
    identity,
    password_token,
    secure_client,
)
from tests.api.conftest import patient


def assert_outcome(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    codes = [c["code"] for i in body["issue"] for c in i["details"]["coding"]]
    assert code in codes, body


# -- what answers without a token -------------------------------------------------------------


def test_without_a_token_only_the_public_doors_answer(server: TestClient) -> None:
    response = server.get("/fhir/Patient")
    assert_outcome(response, 401, "rofecare-3401")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_outcome(server.post("/fhir/Patient", json=patient()), 401, "rofecare-3401")
    assert_outcome(server.post("/fhir", json={"resourceType": "Bundle"}), 401, "rofecare-3401")
    assert_outcome(server.get("/fhir/Patient/x/$everything"), 401, "rofecare-3401")
    metadata = server.get("/fhir/metadata").json()
    service = metadata["rest"][0]["security"]["service"][0]["coding"][0]
    assert service["code"] == "SMART-on-FHIR"
    assert server.get("/health").status_code == 200
    config = server.get("/fhir/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == "http://testserver/oauth/token"
    assert config["issuer"] == BASE
    assert "S256" in config["code_challenge_methods_supported"]
    assert "permission-v2" in config["capabilities"]
    keys = server.get(config["jwks_uri"].removeprefix("http://testserver")).json()["keys"]
    assert keys and all("d" not in key and "p" not in key for key in keys)


def test_a_password_grant_token_opens_the_api_and_the_write_is_audited(
    server: TestClient, admin: str
) -> None:
    created = server.post("/fhir/Patient", json=patient(), headers=bearer(admin))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert server.get(f"/fhir/Patient/{pid}", headers=bearer(admin)).status_code == 200
    events = audit_events(server, admin, f"&entity=Patient/{pid}")
    writes = [e for e in events if e["action"] == "C"]
    assert len(writes) == 1
    write = writes[0]
    assert write["subtype"][0]["code"] == "create"
    assert write["agent"][0]["name"] == "admin" and write["agent"][0]["requestor"] is True
    assert write["agent"][1]["who"]["identifier"]["value"] == "rofecare-console"
    assert write["agent"][0]["network"]["address"] == "testclient"
    # The write's AuditEvent was committed with it: same lastUpdated instant.
    assert write["recorded"] == created.json()["meta"]["lastUpdated"]
    reads = [e for e in events if e["action"] == "R"]
    assert reads and reads[0]["subtype"][0]["code"] == "read"
    entity = reads[0]["entity"][0]
    assert entity["what"]["reference"] == f"Patient/{pid}" and entity["role"]["code"] == "1"


def test_audit_events_are_append_only_for_everybody(server: TestClient, admin: str) -> None:
    server.post("/fhir/Patient", json=patient(), headers=bearer(admin))
    event = audit_events(server, admin)[0]
    changed = {**event, "outcome": "8"}
    assert_outcome(
        server.put(f"/fhir/AuditEvent/{event['id']}", json=changed, headers=bearer(admin)),
        405,
        "rofecare-3406",
    )
    assert_outcome(
        server.delete(f"/fhir/AuditEvent/{event['id']}", headers=bearer(admin)),
        405,
        "rofecare-3406",
    )
    patch = [{"op": "replace", "path": "/outcome", "value": "8"}]
    headers = {**bearer(admin), "Content-Type": "application/json-patch+json"}
    assert_outcome(
        server.patch(f"/fhir/AuditEvent/{event['id']}", json=patch, headers=headers),
        405,
        "rofecare-3406",
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"AuditEvent/{event['id']}"}}],
    }
    assert server.post("/fhir", json=bundle, headers=bearer(admin)).status_code == 405


# -- tokens that must be refused -------------------------------------------------------------


def _ring(server: TestClient) -> KeyRing:
    ring: KeyRing = server.app.state.keys.ring()  # type: ignore[attr-defined]
    return ring


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [
            part(json.dumps(header).encode()),
            part(json.dumps(claims).encode()),
            part(signature),
        ]
    )


def _claims(admin: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.get_unverified_claims(admin)
    return claims


def test_expired_tampered_none_wrong_audience_and_wrong_key_tokens_are_refused(
    server: TestClient, admin: str
) -> None:
    ring = _ring(server)
    past = int(time.time()) - 3600
    expired, _ = TokenIssuer(lambda: ring, BASE, 900, clock=lambda: past).issue_access_token(
        subject="x", client_id="rofecare-console", scope="user/*.cruds", audience=BASE
    )
    wrong_audience, _ = TokenIssuer(lambda: ring, BASE, 900).issue_access_token(
        subject="x",
        client_id="rofecare-console",
        scope="user/*.cruds",
        audience="https://other.example/fhir",
    )
    header = jwt.get_unverified_header(admin)
    head, _payload, signature = admin.split(".")
    claims = _claims(admin)
    tampered_claims = {**claims, "scope": "system/*.cruds"}
    tampered = ".".join([head, _forge({}, tampered_claims).split(".")[1], signature])
    unsigned = _forge({**header, "alg": "none"}, claims)
    stranger = SigningKey.generate("RS256", int(time.time()))
    impostor = SigningKey(
        header["kid"], "RS256", stranger.private_pem, stranger.created_at
    )  # same kid, another private key
    wrong_key, _ = TokenIssuer(lambda: KeyRing((impostor,), 900), BASE, 900).issue_access_token(
        subject="x", client_id="rofecare-console", scope="user/*.cruds", audience=BASE
    )
    for token, reason in [
        (expired, "expired"),
        (wrong_audience, "audience"),
        (tampered, "signature"),
        (unsigned, "algorithm"),
        (wrong_key, "signature"),
        ("not-a-jwt", "malformed"),
    ]:
        response = server.get("/fhir/Patient", headers=bearer(token))
        assert_outcome(response, 401, "rofecare-3402")
        assert reason in response.json()["issue"][0]["diagnostics"], (reason, response.text)
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    denials = [e for e in audit_events(server, admin) if e["outcome"] == "4"]
    assert len(denials) >= 6
    assert all(d["agent"][0]["who"]["display"] == "unauthenticated client" for d in denials)


def test_an_hs256_token_signed_with_the_public_key_is_refused(
    server: TestClient, admin: str
) -> None:
    """Key confusion: the published RSA key used as an HMAC secret."""
    import hmac
    from hashlib import sha256

    header = {**jwt.get_unverified_header(admin), "alg": "HS256"}
    public = json.dumps(server.get("/oauth/jwks").json()["keys"][0]).encode()
    unsigned = _forge(header, _claims(admin)).rsplit(".", 1)[0]
    signature = hmac.new(public, unsigned.encode(), sha256).digest()
    token = unsigned + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    response = server.get("/fhir/Patient", headers=bearer(token))
    assert_outcome(response, 401, "rofecare-3402")


# -- passwords and lockout -------------------------------------------------------------------


def test_brute_force_locks_the_account_and_the_right_password_then_fails_too(
    tmp_path: Path,
) -> None:
    with secure_client(tmp_path, lockout_threshold=3, lockout_seconds=600) as server:
        bootstrap(server)
        password = add_user(server, "nurse1", ("nurse",))
        form = {"grant_type": "password", "client_id": "rofecare-console", "username": "nurse1"}
        for _ in range(3):
            refused = server.post("/oauth/token", data={**form, "password": "guess-Guess-1"})
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        locked = server.post("/oauth/token", data={**form, "password": password})
        assert locked.status_code == 400
        # One message for a wrong password, a lock and an unknown user: nothing to probe.
        unknown = server.post(
            "/oauth/token", data={**form, "username": "nobody", "password": password}
        )
        assert locked.json() == refused.json() == unknown.json()
        admin = password_token(server, "admin", ADMIN_PASSWORD)["access_token"]
        logins = [e for e in audit_events(server, admin) if e["type"]["code"] == "110114"]
        reasons = sorted(e["outcomeDesc"] for e in logins)
        assert reasons.count("login refused: bad-password") == 2
        assert "login refused: locked-now" in reasons and "login refused: locked" in reasons
        assert "login refused: unknown-user" in reasons and "login succeeded" in reasons


def test_refresh_tokens_rotate_and_a_reused_one_ends_the_family(
    server: TestClient,
) -> None:
    first = password_token(server, "admin", ADMIN_PASSWORD)
    form = {"grant_type": "refresh_token", "client_id": "rofecare-console"}
    second = server.post("/oauth/token", data={**form, "refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert server.get("/fhir/Patient", headers=bearer(rotated["access_token"])).status_code == 200
    reused = server.post("/oauth/token", data={**form, "refresh_token": first["refresh_token"]})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # The thief replayed the old one: the newer one is dead too.
    newer = server.post("/oauth/token", data={**form, "refresh_token": rotated["refresh_token"]})
    assert newer.status_code == 400


def test_the_password_grant_can_be_turned_off(tmp_path: Path) -> None:
    with secure_client(tmp_path, password_grant_enabled=False) as server:
        bootstrap(server)
        response = server.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "rofecare-console",
                "username": "admin",
                "password": ADMIN_PASSWORD,
            },
        )
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_grant_type"


def test_bad_token_requests_get_oauth_errors_not_500(server: TestClient) -> None:
    cases = [
        ({"grant_type": "magic"}, 400, "unsupported_grant_type"),
        ({"grant_type": "password", "client_id": "nope"}, 401, "invalid_client"),
        ({"grant_type": "password", "client_id": "rofecare-console"}, 400, "invalid_request"),
        (
            {"grant_type": "client_credentials", "client_id": "rofecare-console"},
            400,
            "unauthorized_client",
        ),
        ({"grant_type": "refresh_token", "client_id": "rofecare-console"}, 400, "invalid_grant"),
        ({"grant_type": "password", "client_id": "x" * 9000}, 400, "invalid_request"),
    ]
    for form, status, error in cases:
        response = server.post("/oauth/token", data=form)
        assert response.status_code == status, (form, response.text)
        assert response.json()["error"] == error
        assert response.headers["Cache-Control"] == "no-store"
    as_json = server.post("/oauth/token", json={"grant_type": "password"})
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"


def test_secrets_never_reach_the_logs(server: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answer = password_token(server, "admin", ADMIN_PASSWORD)
    server.get("/fhir/Patient", headers=bearer(answer["access_token"]))
    server.get("/fhir/Patient", headers=bearer(answer["access_token"] + "x"))
    server.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "rofecare-console",
            "username": "admin",
            "password": "Wrong-password-99",
        },
    )
    text = caplog.text
    assert caplog.records  # something was logged (the denial), just not the secrets
    for secret in (
        ADMIN_PASSWORD,
        "Wrong-password-99",
        answer["access_token"],
        answer["refresh_token"],
        answer["access_token"].split(".")[2],
    ):
        assert secret not in text


def test_authentication_off_is_refused_off_the_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Authentication is off"):
        build_app(Settings(data_dir=tmp_path, auth_enabled=False, host="0.0.0.0"))


def test_a_revocation_racing_a_refresh_ends_the_new_token_too(
    server: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = password_token(server, "admin", ADMIN_PASSWORD)
    store = identity(server).store
    original = store.use_refresh_token

    async def revoked_meanwhile(digest: str) -> Any:
        token = await original(digest)
        if token is not None:
            await store.revoke_family(token.family)  # /oauth/revoke lands right here
        return token

    monkeypatch.setattr(store, "use_refresh_token", revoked_meanwhile)
    form = {"grant_type": "refresh_token", "client_id": "rofecare-console"}
    raced = server.post("/oauth/token", data={**form, "refresh_token": first["refresh_token"]})
    assert raced.status_code == 400 and raced.json()["error"] == "invalid_grant"
