"""Who may do what: the role matrix, patient/ scopes, SMART app and backend service flows."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jose import jwk, jwt

from fhir_server.auth.roles import ROLE_NAMES, scopes_of
from tests.api.auth_helpers import (
    ADMIN_PASSWORD,
    BASE,
    add_user,
    audit_events,
    bearer,
    identity,
    password_token,
    pkce_pair,
)
from tests.api.conftest import observation, patient

REDIRECT = "https://app.example/callback"
# Every type some role names, and a few none does.
MATRIX_TYPES = sorted(
    {s.resource_type for name in ROLE_NAMES for s in scopes_of([name]).resource_scopes} - {"*"}
    | {"Library", "Questionnaire", "AuditEvent", "Provenance", "Basic"}
)
INTERACTIONS = {"r": "read", "s": "search", "c": "create", "u": "patch", "d": "delete"}


def _call(server: TestClient, token: str, resource_type: str, letter: str) -> int:
    headers = bearer(token)
    if letter == "r":
        return server.get(f"/fhir/{resource_type}/nope", headers=headers).status_code
    if letter == "s":
        return server.get(f"/fhir/{resource_type}?_count=1", headers=headers).status_code
    if letter == "c":
        body = {"resourceType": resource_type, "bogus": True}  # invalid: 400 once allowed
        return server.post(f"/fhir/{resource_type}", json=body, headers=headers).status_code
    if letter == "u":
        patch_headers = {**headers, "Content-Type": "application/json-patch+json"}
        return server.patch(
            f"/fhir/{resource_type}/nope", json=[], headers=patch_headers
        ).status_code
    return server.delete(f"/fhir/{resource_type}/nope", headers=headers).status_code


def test_every_role_gets_exactly_what_its_scopes_allow(server: TestClient) -> None:
    mismatches = []
    for role in ROLE_NAMES:
        username = role.replace("-", "") + "1"
        password = add_user(server, username, (role,))
        token = password_token(server, username, password, "user/*.cruds")["access_token"]
        allowed = scopes_of([role])
        for resource_type in MATRIX_TYPES:
            for letter in INTERACTIONS:
                status = _call(server, token, resource_type, letter)
                expected = allowed.allows(resource_type, letter)
                if (status != 403) != expected or status in (401, 500):
                    mismatches.append((role, resource_type, INTERACTIONS[letter], status))
    assert mismatches == []


def test_a_role_cannot_be_widened_by_asking_for_more(server: TestClient) -> None:
    password = add_user(server, "cashier1", ("cashier",))
    answer = password_token(server, "cashier1", password, "user/*.cruds user/Condition.rs")
    assert "Condition" not in answer["scope"] and "Invoice" in answer["scope"]
    token = answer["access_token"]
    response = server.get("/fhir/Condition", headers=bearer(token))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    admin = password_token(server, "admin", ADMIN_PASSWORD)["access_token"]
    denied = [e for e in audit_events(server, admin) if e["outcome"] == "4"]
    assert denied and denied[-1]["agent"][0]["name"] == "cashier1"
    assert "403" in denied[-1]["outcomeDesc"]


def test_includes_and_transactions_are_held_to_the_same_scopes(
    server: TestClient, admin: str
) -> None:
    pid = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    server.post("/fhir/Observation", json=observation(f"Patient/{pid}"), headers=bearer(admin))
    password = add_user(server, "clerk", ("receptionist",))
    clerk = password_token(server, "clerk", password, "user/*.cruds")["access_token"]
    revinclude = server.get(
        f"/fhir/Patient?_id={pid}&_revinclude=Observation:subject", headers=bearer(clerk)
    ).json()
    kinds = [entry["resource"]["resourceType"] for entry in revinclude["entry"]]
    assert kinds == ["Patient"]  # the Observation was not the receptionist's to see
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": observation(f"Patient/{pid}"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    refused = server.post("/fhir", json=bundle, headers=bearer(clerk))
    assert refused.status_code == 403
    validate = server.post(
        "/fhir/Observation/$validate", json=observation(f"Patient/{pid}"), headers=bearer(clerk)
    )
    assert validate.status_code == 403  # $validate needs the scope of the write it tries
    own_kind = server.post("/fhir/Patient/$validate", json=patient(), headers=bearer(clerk))
    assert own_kind.status_code == 200
    total = server.get("/fhir/Patient?_summary=count", headers=bearer(admin)).json()["total"]
    assert total == 1  # nothing of the refused transaction was written


# -- a SMART app: authorization code + PKCE, launch/patient ----------------------------------


def _register_app(server: TestClient, scope: str) -> None:
    assert server.portal is not None

    async def register() -> None:
        await identity(server).users.add_client(
            "growth-chart",
            name="Growth chart",
            kind="public",
            grant_types=("authorization_code", "refresh_token"),
            scope=scope,
            redirect_uris=(REDIRECT,),
        )

    server.portal.call(register)


def _authorize_params(challenge: str, scope: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "growth-chart",
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-123",
        "aud": BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def _launch(
    server: TestClient, username: str, password: str, patient_id: str, scope: str
) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    params = _authorize_params(challenge, scope)
    page = server.get("/oauth/authorize", params=params)
    assert page.status_code == 200 and "Growth chart" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    answer = server.post(
        "/oauth/authorize",
        data={
            **params,
            "username": username,
            "password": password,
            "patient": patient_id,
            "decision": "approve",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-123"]
    exchange = {
        "grant_type": "authorization_code",
        "client_id": "growth-chart",
        "code": query["code"][0],
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    token = server.post("/oauth/token", data=exchange)
    assert token.status_code == 200, token.text
    replay = server.post("/oauth/token", data=exchange)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    result: dict[str, Any] = token.json()
    return result


def test_a_patient_app_sees_only_its_patients_record(server: TestClient, admin: str) -> None:
    mine = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    other = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    own_obs = server.post(
        "/fhir/Observation", json=observation(f"Patient/{mine}"), headers=bearer(admin)
    ).json()["id"]
    other_obs = server.post(
        "/fhir/Observation", json=observation(f"Patient/{other}"), headers=bearer(admin)
    ).json()["id"]
    scope = (
        "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.crs"
    )
    _register_app(server, scope)
    password = add_user(server, "doctor", ("physician",), fhir_user="Practitioner/dr1")
    answer = _launch(server, "doctor", password, mine, scope)
    assert answer["patient"] == mine and "id_token" in answer and "refresh_token" in answer
    id_claims = jwt.get_unverified_claims(answer["id_token"])
    assert id_claims["fhirUser"] == "Practitioner/dr1" and id_claims["aud"] == "growth-chart"
    token = answer["access_token"]

    def ids(url: str) -> list[str]:
        response = server.get(url, headers=bearer(token))
        assert response.status_code == 200, response.text
        return [entry["resource"]["id"] for entry in response.json().get("entry", [])]

    assert ids("/fhir/Observation") == [own_obs]
    assert ids("/fhir/Patient") == [mine]
    assert ids(f"/fhir/Observation?_include=Observation:subject&_id={own_obs},{other_obs}") == [
        own_obs,
        mine,
    ]
    assert server.get(f"/fhir/Observation/{own_obs}", headers=bearer(token)).status_code == 200
    assert server.get(f"/fhir/Observation/{other_obs}", headers=bearer(token)).status_code == 403
    assert server.get(f"/fhir/Patient/{other}", headers=bearer(token)).status_code == 403
    assert server.get("/fhir/Condition", headers=bearer(token)).status_code == 403
    written = server.post(
        "/fhir/Observation", json=observation(f"Patient/{mine}"), headers=bearer(token)
    )
    assert written.status_code == 201
    elsewhere = server.post(
        "/fhir/Observation", json=observation(f"Patient/{other}"), headers=bearer(token)
    )
    assert elsewhere.status_code == 403
    assert server.get("/fhir/_history", headers=bearer(token)).status_code == 403
    everything = server.get(f"/fhir/Patient/{mine}/$everything", headers=bearer(token))
    assert everything.status_code == 200, everything.text
    record = {
        (e["resource"]["resourceType"], e["resource"]["id"]) for e in everything.json()["entry"]
    }
    assert ("Observation", own_obs) in record and ("Observation", other_obs) not in record
    assert all(kind in ("Patient", "Observation") for kind, _ in record)  # what it may read
    assert (
        server.get(f"/fhir/Patient/{other}/$everything", headers=bearer(token)).status_code == 403
    )


def test_the_authorization_endpoint_refuses_what_it_must(server: TestClient) -> None:
    scope = "launch/patient patient/Patient.rs"
    _register_app(server, scope)
    _, challenge = pkce_pair()
    wrong_redirect = _authorize_params(challenge, scope, redirect_uri="https://evil.example/cb")
    page = server.get("/oauth/authorize", params=wrong_redirect, follow_redirects=False)
    assert page.status_code == 400 and "redirect_uri" in page.text  # shown, never redirected
    unknown = server.get(
        "/oauth/authorize", params=_authorize_params(challenge, scope, client_id="nope")
    )
    assert unknown.status_code == 400
    for extra, error in [
        ({"aud": "https://other.example/fhir"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ]:
        answer = server.get(
            "/oauth/authorize",
            params=_authorize_params(challenge, scope, **extra),
            follow_redirects=False,
        )
        assert answer.status_code == 302
        assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == [error]
    denied = server.post(
        "/oauth/authorize",
        data={**_authorize_params(challenge, scope), "decision": "deny"},
        follow_redirects=False,
    )
    assert parse_qs(urlsplit(denied.headers["location"]).query)["error"] == ["access_denied"]
    bad_login = server.post(
        "/oauth/authorize",
        data={
            **_authorize_params(challenge, scope),
            "username": "admin",
            "password": "wrong-Wrong-1",
            "patient": "x",
            "decision": "approve",
        },
    )
    assert bad_login.status_code == 401 and "Invalid username or password" in bad_login.text
    assert (
        "<script"
        not in server.get(
            "/oauth/authorize", params=_authorize_params(challenge, "<script>alert(1)</script>")
        ).text
    )


def test_a_wrong_pkce_verifier_gets_no_token(server: TestClient, admin: str) -> None:
    mine = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    scope = "launch/patient patient/Patient.rs"
    _register_app(server, scope)
    _, challenge = pkce_pair()
    params = _authorize_params(challenge, scope)
    answer = server.post(
        "/oauth/authorize",
        data={
            **params,
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "patient": mine,
            "decision": "approve",
        },
        follow_redirects=False,
    )
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    exchange = server.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "growth-chart",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": pkce_pair()[0],  # not the one the challenge came from
        },
    )
    assert exchange.status_code == 400 and exchange.json()["error"] == "invalid_grant"


# -- a backend service: client_credentials with private_key_jwt ------------------------------


def _service_key() -> tuple[str, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = jwk.construct(pem, "RS384").public_key().to_dict()
    public.update({"kid": "svc-1", "alg": "RS384", "use": "sig"})
    return pem, {"keys": [public]}


def _assertion(pem: str, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {
        "iss": "lab-sync",
        "sub": "lab-sync",
        "aud": "http://testserver/oauth/token",
        "exp": now + 240,
        "jti": jti or secrets.token_hex(8),
    }
    token: str = jwt.encode(claims, pem, algorithm="RS384", headers={"kid": "svc-1"})
    return token


def test_a_backend_service_gets_system_scopes_and_replays_are_refused(
    server: TestClient,
) -> None:
    pem, jwks = _service_key()
    assert server.portal is not None

    async def register() -> None:
        await identity(server).users.add_client(
            "lab-sync",
            name="Laboratory analyser bridge",
            kind="confidential",
            grant_types=("client_credentials",),
            scope="system/Observation.crs system/Patient.rs",
            jwks=jwks,
        )

    server.portal.call(register)
    assertion = _assertion(pem)
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Observation.rs system/Condition.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    answer = server.post("/oauth/token", data=form)
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "system/Observation.rs"
    assert "refresh_token" not in answer.json()
    token = answer.json()["access_token"]
    assert server.get("/fhir/Observation", headers=bearer(token)).status_code == 200
    assert server.get("/fhir/Condition", headers=bearer(token)).status_code == 403
    replay = server.post("/oauth/token", data=form)
    assert replay.status_code == 401 and "replay" in replay.json()["error_description"]
    stranger_pem, _ = _service_key()
    forged = server.post(
        "/oauth/token", data={**form, "client_assertion": _assertion(stranger_pem)}
    )
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_client"
    introspected = server.post(
        "/oauth/introspect", data={**form, "client_assertion": _assertion(pem), "token": token}
    )
    assert introspected.status_code == 200, introspected.text
    assert introspected.json()["active"] is True
    assert introspected.json()["client_id"] == "lab-sync"


# -- a physician edits only their own consultations ------------------------------------------


def _consultation(practitioner: str, status: str = "in-progress") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "participant": [{"individual": {"reference": f"Practitioner/{practitioner}"}}],
    }


def test_a_physician_changes_only_consultations_they_take_part_in(
    server: TestClient, admin: str
) -> None:
    own = server.post("/fhir/Encounter", json=_consultation("dr1"), headers=bearer(admin))
    theirs = server.post("/fhir/Encounter", json=_consultation("dr2"), headers=bearer(admin))
    own_id, their_id = own.json()["id"], theirs.json()["id"]
    doctor = password_token(
        server, "dr1", add_user(server, "dr1", ("physician",), "Practitioner/dr1"), "user/*.cruds"
    )["access_token"]
    chief = password_token(
        server,
        "chief",
        add_user(server, "chief", ("supervisor-physician",), "Practitioner/chief"),
        "user/*.cruds",
    )["access_token"]
    finished = {**_consultation("dr1", "finished"), "id": own_id}
    assert (
        server.put(f"/fhir/Encounter/{own_id}", json=finished, headers=bearer(doctor)).status_code
        == 200
    )
    refused = server.put(
        f"/fhir/Encounter/{their_id}",
        json={**_consultation("dr1", "finished"), "id": their_id},  # claiming it changes nothing
        headers=bearer(doctor),
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "rofecare-3408"
    patch_headers = {**bearer(doctor), "Content-Type": "application/json-patch+json"}
    patch = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    assert (
        server.patch(f"/fhir/Encounter/{their_id}", json=patch, headers=patch_headers).status_code
        == 403
    )
    assert server.get(f"/fhir/Encounter/{their_id}", headers=bearer(doctor)).status_code == 200
    supervised = {**_consultation("dr2", "finished"), "id": their_id}
    assert (
        server.put(
            f"/fhir/Encounter/{their_id}", json=supervised, headers=bearer(chief)
        ).status_code
        == 200
    )


def test_a_temporary_password_is_changed_on_the_login_page(server: TestClient, admin: str) -> None:
    mine = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    assert server.portal is not None

    async def add_temporary() -> None:
        await identity(server).users.add_user(
            "locum", "Temporary-pass-2024!", ("physician",), must_change=True
        )

    server.portal.call(add_temporary)
    scope = "launch/patient patient/Patient.rs"
    _register_app(server, scope)
    refused = server.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "rofecare-console",
            "username": "locum",
            "password": "Temporary-pass-2024!",
        },
    )
    assert refused.status_code == 400 and "changed first" in refused.json()["error_description"]
    _, challenge = pkce_pair()
    params = _authorize_params(challenge, scope)
    login = {
        **params,
        "username": "locum",
        "password": "Temporary-pass-2024!",
        "patient": mine,
        "decision": "approve",
    }
    change = server.post("/oauth/authorize", data=login, follow_redirects=False)
    assert change.status_code == 200 and "Choose a new password" in change.text
    assert "Temporary-pass-2024!" not in change.text  # never written back into the page
    weak = server.post(
        "/oauth/authorize",
        data={**login, "new_password": "short", "new_password_again": "short"},
        follow_redirects=False,
    )
    assert weak.status_code == 400 and "at least 12" in weak.text
    differ = server.post(
        "/oauth/authorize",
        data={**login, "new_password": "Brand-new-pass-77", "new_password_again": "other"},
        follow_redirects=False,
    )
    assert differ.status_code == 400 and "differ" in differ.text
    done = server.post(
        "/oauth/authorize",
        data={
            **login,
            "new_password": "Brand-new-pass-77",
            "new_password_again": "Brand-new-pass-77",
        },
        follow_redirects=False,
    )
    assert done.status_code == 302 and "code=" in done.headers["location"]
    assert password_token(server, "locum", "Brand-new-pass-77", "user/Patient.rs")["access_token"]


# -- closed by the security review of 2026-12-03 ----------------------------------------------


def _condition(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": subject},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "86406008"}]},
    }


def test_conditional_interactions_need_the_scopes_of_their_search(
    server: TestClient, admin: str
) -> None:
    pid = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    cid = server.post(
        "/fhir/Condition", json=_condition(f"Patient/{pid}"), headers=bearer(admin)
    ).json()["id"]
    clerk = password_token(
        server, "clerk", add_user(server, "clerk", ("receptionist",)), "user/*.cruds"
    )["access_token"]
    auditor = password_token(
        server, "auditor1", add_user(server, "auditor1", ("auditor",)), "user/*.rs"
    )["access_token"]
    headers = {**bearer(clerk), "If-None-Exist": f"_id={cid}", "Prefer": "return=representation"}
    assert (
        server.post("/fhir/Condition", json=_condition("Patient/x"), headers=headers).status_code
        == 403
    )
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": _condition("Patient/x"),
                "request": {"method": "POST", "url": "Condition", "ifNoneExist": f"_id={cid}"},
            },
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        ],
    }
    answer = server.post(
        "/fhir", json=batch, headers={**bearer(clerk), "Prefer": "return=representation"}
    ).json()
    assert answer["entry"][0]["response"]["status"].startswith("403")
    assert "resource" not in answer["entry"][0]
    fake = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2026-01-01T00:00:00Z",
    }
    assert (
        server.put("/fhir/AuditEvent?_id=nomatch", json=fake, headers=bearer(clerk)).status_code
        == 403
    )
    assert (
        server.put(
            "/fhir/Condition?_id=nomatch",
            json=_condition(f"Patient/{pid}"),
            headers=bearer(auditor),
        ).status_code
        == 403
    )
    for criteria in (f"subject=Patient/{pid}", "subject=Patient/nobody"):  # same answer
        assert (
            server.delete(f"/fhir/Condition?{criteria}", headers=bearer(clerk)).status_code == 403
        )
    assert (
        server.get(
            "/fhir/Patient?_has:Condition:subject:code=86406008", headers=bearer(clerk)
        ).status_code
        == 403
    )
    assert (
        server.get(
            "/fhir/Encounter?diagnosis:Condition.code=86406008", headers=bearer(clerk)
        ).status_code
        == 403
    )
    events = audit_events(server, admin)
    batch_reads = [e for e in events if e.get("subtype", [{}])[0].get("code") == "batch"]
    assert any(
        entity.get("what", {}).get("reference") == f"Patient/{pid}"
        for event in batch_reads
        for entity in event.get("entity", [])
    )
    refusals = [e for e in events if e["outcome"] == "4" and e["agent"][0].get("name") == "clerk"]
    assert len(refusals) >= 7  # each 403 above, the batch entry's included


def test_a_patient_app_cannot_reach_another_patient_through_ids_history_or_has(
    server: TestClient, admin: str
) -> None:
    mine = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    other = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    # Another patient's Observation that happens to carry my patient's id as its own id.
    twin = server.put(
        f"/fhir/Observation/{mine}",
        json={**observation(f"Patient/{other}"), "id": mine},
        headers=bearer(admin),
    )
    assert twin.status_code == 201
    gone = server.post(
        "/fhir/Observation", json=observation(f"Patient/{other}"), headers=bearer(admin)
    ).json()["id"]
    assert server.delete(f"/fhir/Observation/{gone}", headers=bearer(admin)).status_code == 200
    scope = "launch/patient patient/Patient.rs patient/Observation.rs patient/Practitioner.rs"
    _register_app(server, scope)
    token = _launch(server, "admin", ADMIN_PASSWORD, mine, scope)["access_token"]
    found = server.get("/fhir?_type=Patient,Observation", headers=bearer(token)).json()
    assert [e["resource"]["resourceType"] for e in found.get("entry", [])] == []
    alone = server.get("/fhir/Patient", headers=bearer(token)).json()
    assert [e["resource"]["id"] for e in alone["entry"]] == [mine]
    history = server.get(f"/fhir/Observation/{gone}/_history", headers=bearer(token))
    assert history.status_code == 403
    has = server.get(
        f"/fhir/Patient?_has:Observation:subject:_id={mine}", headers=bearer(token)
    ).json()
    assert has.get("entry", []) == []  # the twin is another patient's: not seen through _has


def test_a_password_reset_ends_the_users_sessions(server: TestClient) -> None:
    password = add_user(server, "nurse2", ("nurse",))
    first = password_token(server, "nurse2", password)
    assert server.portal is not None
    server.portal.call(
        lambda: identity(server).users.set_password(
            "nurse2", "Another-pass-2024!", must_change=False
        )
    )
    again = server.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "rofecare-console",
            "refresh_token": first["refresh_token"],
        },
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_the_compartment_star_search_keeps_the_types_the_token_may_search(
    server: TestClient, admin: str
) -> None:
    pid = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    server.post("/fhir/Observation", json=observation(f"Patient/{pid}"), headers=bearer(admin))
    doctor = password_token(server, "dr7", add_user(server, "dr7", ("physician",)), "user/*.cruds")[
        "access_token"
    ]
    chart = server.get(f"/fhir/Patient/{pid}/*", headers=bearer(doctor))
    assert chart.status_code == 200, chart.text
    kinds = {e["resource"]["resourceType"] for e in chart.json()["entry"]}
    assert "Observation" in kinds and "AuditEvent" not in kinds


def test_an_unknown_username_is_not_recorded_as_typed(server: TestClient, admin: str) -> None:
    typed = "Maybe-My-Password-42"
    server.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "rofecare-console",
            "username": typed,
            "password": "whatever-Else-1",
        },
    )
    events = audit_events(server, admin)
    assert typed not in str(events)
    assert any(e.get("outcomeDesc") == "login refused: unknown-user" for e in events)


def test_compartment_checks_follow_only_compartment_links(server: TestClient, admin: str) -> None:
    mine = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    other = server.post("/fhir/Patient", json=patient(), headers=bearer(admin)).json()["id"]
    # focus is no compartment link: this is the other patient's Observation.
    about_me = {**observation(f"Patient/{other}"), "focus": [{"reference": f"Patient/{mine}"}]}
    theirs = server.post("/fhir/Observation", json=about_me, headers=bearer(admin)).json()["id"]
    scope = "launch/patient patient/Patient.rs patient/Observation.crs"
    _register_app(server, scope)
    token = _launch(server, "admin", ADMIN_PASSWORD, mine, scope)["access_token"]
    assert server.get(f"/fhir/Observation/{theirs}", headers=bearer(token)).status_code == 403
    # Filed into my record but naming another patient in a compartment link: refused.
    both = {**observation(f"Patient/{mine}"), "performer": [{"reference": f"Patient/{other}"}]}
    refused = server.post("/fhir/Observation", json=both, headers=bearer(token))
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "rofecare-3405"
    own = server.post(
        "/fhir/Observation", json=observation(f"Patient/{mine}"), headers=bearer(token)
    )
    assert own.status_code == 201
