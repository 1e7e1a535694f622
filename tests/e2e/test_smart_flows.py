"""SMART on FHIR against a real ``rofecare serve`` with authentication on, scripted with httpx
exactly as a browser, an app and a backend service would drive it.

https://hl7.org/fhir/smart-app-launch/app-launch.html (standalone launch, PKCE, id_token,
refresh), https://hl7.org/fhir/smart-app-launch/backend-services.html (client_credentials
with a signed client assertion). The apps and users are registered with the ``rofecare``
command line on the same data directory, before the server starts or while it runs (the
identity store is one SQLite file shared by both).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.exceptions import JWTError

from fhir_server.auth.key_manager import FORCED_REFRESH_GAP
from fhir_server.auth.tokens import InvalidToken, TokenVerifier
from fhir_server.config import Settings
from fhir_server.services.identity import Identity, build_identity
from tests.e2e.fhir import FHIR_JSON, Json, observation, patient
from tests.e2e.server import RunningServer, start_server

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHEAP_HASHING = {
    "ROFECARE_PASSWORD_HASH_TIME_COST": "1",
    "ROFECARE_PASSWORD_HASH_MEMORY_KIB": "1024",
}
# Random per run, so that finding one in the log can only mean it was logged.
ADMIN_PASSWORD = f"Adm1n-e2e-{secrets.token_urlsafe(12)}"
DOCTOR_PASSWORD = f"Dr-Smith-9-{secrets.token_urlsafe(12)}"
CONSOLE = "rofecare-console"
APP = "growth-chart"
APP_SCOPE = (
    "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.rs"
)
REDIRECT = "https://app.example/cb"
SERVICE = "lab-sync"
SERVICE_KID = "lab-sync-1"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FIRST_START = re.compile(r"with the password\n\n {4}(\S+)\n")


def cli(*args: str, data_dir: Path, stdin: str | None = None) -> str:
    """``python -m fhir_server ARGS --data-dir DATA_DIR``; its standard output. Fails the test
    on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "fhir_server", *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ROFECARE_")},
            **CHEAP_HASHING,
        },
        timeout=60,
    )
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 section 4."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    bundle: Json = response.json()
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


@dataclass
class Deployment:
    """The module's server, its discovery document, and every secret that went over the wire
    (none of them may ever appear in the server's log)."""

    server: RunningServer
    http: httpx.Client
    config: Json
    never_logged: list[str] = field(default_factory=list)

    @property
    def token_url(self) -> str:
        url: str = self.config["token_endpoint"]
        return url

    def token(self, form: dict[str, str]) -> httpx.Response:
        response = self.http.post(self.token_url, data=form)
        if response.status_code == 200:
            answer = response.json()
            self.never_logged += [
                answer[name]
                for name in ("access_token", "refresh_token", "id_token")
                if name in answer
            ]
        return response

    def password_grant(
        self, username: str, password: str, scope: str | None = None
    ) -> dict[str, Any]:
        form = {
            "grant_type": "password",
            "client_id": CONSOLE,
            "username": username,
            "password": password,
        }
        if scope is not None:
            form["scope"] = scope
        response = self.token(form)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def create(self, token: str, resource: Json) -> str:
        response = self.http.post(
            f"{self.server.base}/{resource['resourceType']}",
            json=resource,
            headers={**bearer(token), "Content-Type": FHIR_JSON},
        )
        assert response.status_code == 201, response.text
        created: str = response.json()["id"]
        return created


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("smart")
    data = directory / "data"
    # Registered before the first start: the server finds the app in the shared store.
    cli("client", "add", APP, "--scope", APP_SCOPE, "--redirect-uri", REDIRECT, data_dir=data)
    server = start_server(
        data,
        directory / "server.log",
        auth=True,
        env={**CHEAP_HASHING, "ROFECARE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )
    try:
        # Added while it runs (a user added before the first start would stop the bootstrap
        # of admin and rofecare-console: see test_identity_cli.py).
        cli(
            "user",
            "add",
            "drsmith",
            "--role",
            "physician",
            "--practitioner",
            "dr1",
            "--password-stdin",
            data_dir=data,
            stdin=DOCTOR_PASSWORD + "\n",
        )
        with httpx.Client(timeout=10) as http:
            discovered = http.get(f"{server.base}/.well-known/smart-configuration")
            assert discovered.status_code == 200, discovered.text
            yield Deployment(server, http, discovered.json(), [ADMIN_PASSWORD])
    finally:
        code, seconds = server.terminate()
    assert code == 0, f"exit code {code} {seconds:.1f} s after SIGTERM; log:\n{server.log()}"


# -- 1. first start ---------------------------------------------------------------------------


def test_first_start_prints_the_generated_admin_password_once_and_it_works(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_server(data, first_log, auth=True, env=CHEAP_HASHING)
    assert first.terminate()[0] == 0
    printed = FIRST_START.findall(first.log())
    assert len(printed) == 1, first.log()
    password = printed[0]
    assert first.log().count(password) == 1

    second = start_server(data, second_log, auth=True, env=CHEAP_HASHING)
    try:
        assert "First start" not in second.log() and password not in second.log()
        with httpx.Client(timeout=10) as http:
            config = http.get(f"{second.base}/.well-known/smart-configuration").json()
            answer = http.post(
                config["token_endpoint"],
                data={
                    "grant_type": "password",
                    "client_id": CONSOLE,
                    "username": "admin",
                    "password": password,
                },
            )
            assert answer.status_code == 200, answer.text
            token = answer.json()["access_token"]
            assert http.get(f"{second.base}/Patient", headers=bearer(token)).status_code == 200
    finally:
        code, _ = second.terminate()
    assert code == 0
    assert password not in second.log()
    for secret in (token, answer.json()["refresh_token"]):
        assert secret not in first.log() + second.log()


# -- 2. a SMART app: standalone launch --------------------------------------------------------


class LoginForm(HTMLParser):
    """What a browser reads of the sign-in page: the form, its fields and its buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = ""
        self.hidden: dict[str, str] = {}
        self.inputs: list[str] = []
        self.buttons: dict[str, tuple[str, str]] = {}
        self._button: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action, self.method = found.get("action"), found.get("method", "get").lower()
        elif tag == "input" and found.get("type") == "hidden":
            self.hidden[found["name"]] = found.get("value", "")
        elif tag == "input":
            self.inputs.append(found["name"])
        elif tag == "button":
            self._button = (found.get("name", ""), found.get("value", ""))

    def handle_data(self, data: str) -> None:
        if self._button is not None and data.strip():
            self.buttons[data.strip()] = self._button
            self._button = None


def sign_in(
    deployment: Deployment, authorize_url: str, params: dict[str, str], patient_id: str
) -> str:
    """The browser part: open the authorization page, fill in and submit its form, and
    return where the server sends the browser back to (the app's redirect URI)."""
    http = deployment.http
    page = http.get(authorize_url, params=params)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    form = LoginForm()
    form.feed(page.text)
    assert form.method == "post" and form.action is not None
    assert {"username", "password", "patient"} <= set(form.inputs), form.inputs
    assert form.hidden["code_challenge"] == params["code_challenge"]
    button, value = form.buttons["Sign in and allow"]
    submitted = http.post(
        urljoin(str(page.url), form.action),
        data={
            **form.hidden,
            "username": "drsmith",
            "password": DOCTOR_PASSWORD,
            "patient": patient_id,
            button: value,
        },
    )
    assert submitted.status_code == 302, submitted.text
    location: str = submitted.headers["location"]
    return location


def test_a_standalone_launch_sees_only_the_launch_patient(deployment: Deployment) -> None:
    http, base, config = deployment.http, deployment.server.base, deployment.config
    assert {"launch-standalone", "client-public", "context-standalone-patient"} <= set(
        config["capabilities"]
    )
    assert "S256" in config["code_challenge_methods_supported"]
    admin = deployment.password_grant("admin", ADMIN_PASSWORD)["access_token"]
    mine = deployment.create(admin, patient())
    other = deployment.create(admin, patient())
    own_obs = deployment.create(admin, observation(mine))
    other_obs = deployment.create(admin, observation(other))

    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    nonce = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": APP,
        "redirect_uri": REDIRECT,
        "scope": APP_SCOPE,
        "state": state,
        "aud": base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": nonce,
    }
    location = sign_in(deployment, config["authorization_endpoint"], params, mine)
    back = urlsplit(location)
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    query = parse_qs(back.query)
    assert query["state"] == [state] and "error" not in query, query
    code = query["code"][0]
    deployment.never_logged += [code, verifier]

    exchanged = deployment.token(
        {
            "grant_type": "authorization_code",
            "client_id": APP,
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
    )
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.headers["cache-control"] == "no-store"
    answer = exchanged.json()
    assert answer["token_type"] == "Bearer" and answer["patient"] == mine
    assert "refresh_token" in answer and "id_token" in answer, answer
    granted = set(answer["scope"].split())
    assert {"patient/Patient.rs", "patient/Observation.rs", "launch/patient"} <= granted

    # The id_token: signed by a key of the published JWKS, for this app, naming the user.
    jwks = http.get(config["jwks_uri"]).json()
    header = jwt.get_unverified_header(answer["id_token"])
    key = next(key for key in jwks["keys"] if key["kid"] == header["kid"])
    claims = jwt.decode(
        answer["id_token"], key, algorithms=[key["alg"]], audience=APP, issuer=config["issuer"]
    )
    assert claims["fhirUser"] == "Practitioner/dr1" and claims["nonce"] == nonce
    tampered = answer["id_token"][:-4] + (
        "AAAA" if not answer["id_token"].endswith("AAAA") else "BBBB"
    )
    with pytest.raises(JWTError):
        jwt.decode(tampered, key, algorithms=[key["alg"]], audience=APP, issuer=config["issuer"])

    token = answer["access_token"]
    assert ids(http.get(f"{base}/Observation", headers=bearer(token))) == [own_obs]
    assert ids(http.get(f"{base}/Patient", headers=bearer(token))) == [mine]
    assert http.get(f"{base}/Observation/{own_obs}", headers=bearer(token)).status_code == 200
    refused = http.get(f"{base}/Observation/{other_obs}", headers=bearer(token))
    assert refused.status_code == 403, refused.text
    assert http.get(f"{base}/Patient/{other}", headers=bearer(token)).status_code == 403

    # The code is single-use.
    again = http.post(
        deployment.token_url,
        data={
            "grant_type": "authorization_code",
            "client_id": APP,
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    # Refresh once: a new refresh token (rotation), the same patient, a working access token.
    refreshed = deployment.token(
        {"grant_type": "refresh_token", "client_id": APP, "refresh_token": answer["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert renewed["refresh_token"] != answer["refresh_token"]
    assert renewed["access_token"] != token and renewed["patient"] == mine
    fresh = renewed["access_token"]
    assert ids(http.get(f"{base}/Observation", headers=bearer(fresh))) == [own_obs]
    assert http.get(f"{base}/Observation/{other_obs}", headers=bearer(fresh)).status_code == 403


# -- 3. a backend service: client_credentials with private_key_jwt ---------------------------


def service_key() -> tuple[str, Json]:
    """A new RSA key pair: the private PEM and the public JWK Set to register."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public: Json = jwk.construct(public_pem, "RS384").to_dict()
    public.update({"kid": SERVICE_KID, "alg": "RS384", "use": "sig"})
    return pem, {"keys": [public]}


def client_assertion(pem: str, token_url: str) -> str:
    """RFC 7523 section 2.2 as SMART Backend Services asks: RS384, kid, iss = sub = client id,
    aud = the token endpoint, exp at most five minutes ahead, a unique jti."""
    claims = {
        "iss": SERVICE,
        "sub": SERVICE,
        "aud": token_url,
        "exp": int(time.time()) + 240,
        "jti": secrets.token_urlsafe(16),
    }
    signed: str = jwt.encode(claims, pem, algorithm="RS384", headers={"kid": SERVICE_KID})
    return signed


def test_a_backend_service_gets_a_token_and_a_replayed_assertion_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    http, base = deployment.http, deployment.server.base
    pem, jwks = service_key()
    assert all("d" not in key for key in jwks["keys"])
    jwks_file = tmp_path / "lab-sync.jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    # Registered while the server runs.
    added = cli(
        "client",
        "add",
        SERVICE,
        "--scope",
        "system/Observation.rs",
        "--jwks",
        str(jwks_file),
        data_dir=deployment.server.data_dir,
    )
    assert "confidential" in added and "client_credentials" in added, added
    admin = deployment.password_grant("admin", ADMIN_PASSWORD)["access_token"]
    subject = deployment.create(admin, patient())
    measured = deployment.create(admin, observation(subject))

    assertion = client_assertion(pem, deployment.token_url)
    deployment.never_logged.append(assertion)
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Observation.rs",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    answer = deployment.token(form)
    assert answer.status_code == 200, answer.text
    granted = answer.json()
    assert granted["scope"] == "system/Observation.rs" and "refresh_token" not in granted
    token = granted["access_token"]
    assert measured in ids(http.get(f"{base}/Observation?subject={subject}", headers=bearer(token)))
    assert http.get(f"{base}/Patient", headers=bearer(token)).status_code == 403

    replay = http.post(deployment.token_url, data=form)
    assert replay.status_code == 401, replay.text
    assert replay.json()["error"] == "invalid_client"
    assert "replay" in replay.json()["error_description"]


# -- 4. key rotation while the server runs ----------------------------------------------------


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def rotate(data_dir: Path) -> str:
    """``rofecare keys rotate``; the new signing key's kid it prints."""
    printed = cli("keys", "rotate", data_dir=data_dir)
    match = re.search(r"New signing key (\S+) \(", printed)
    assert match is not None, printed
    return match.group(1)


def worker(data_dir: Path) -> Identity:
    """Another worker process's view of the identity store (same files, its own key cache)."""
    return build_identity(
        Settings(data_dir=data_dir, password_hash_time_cost=1, password_hash_memory_kib=1024),
        audit=None,
    )


async def password_grant_in(
    identity: Identity, base: str, username: str, password: str
) -> dict[str, Any]:
    form = {
        "grant_type": "password",
        "client_id": CONSOLE,
        "username": username,
        "password": password,
    }
    root = base.rsplit("/", 1)[0]
    return await identity.authorization_server.token(
        form, None, issuer=base, token_url=f"{root}/oauth/token"
    )


async def sign_elsewhere(data_dir: Path, base: str) -> dict[str, Any]:
    """A token from a worker that read the keys after the rotation: signed with the new key."""
    other = worker(data_dir)
    await other.store.open()
    try:
        return await password_grant_in(other, base, "admin", ADMIN_PASSWORD)
    finally:
        await other.store.close()


def test_tokens_from_before_and_after_a_key_rotation_both_work(deployment: Deployment) -> None:
    http, base = deployment.http, deployment.server.base
    before = deployment.password_grant("admin", ADMIN_PASSWORD)["access_token"]
    last_load_before_rotation = time.monotonic()
    old_kid = kid_of(before)
    new_kid = rotate(deployment.server.data_dir)
    assert new_kid != old_kid

    after = deployment.password_grant("admin", ADMIN_PASSWORD)["access_token"]
    assert kid_of(after) in (old_kid, new_kid)  # the server reads the keys again within a minute
    assert http.get(f"{base}/Patient?_count=1", headers=bearer(after)).status_code == 200

    # A token signed with the new key (by another worker): this server does not know the kid
    # yet, reads the keys again, and accepts it. It re-reads at most once a second, and its
    # last read that missed the rotation was at the latest during the first grant above.
    time.sleep(max(0.0, last_load_before_rotation + FORCED_REFRESH_GAP + 0.2 - time.monotonic()))
    answer = asyncio.run(sign_elsewhere(deployment.server.data_dir, base))
    elsewhere = answer["access_token"]
    deployment.never_logged += [elsewhere, answer["refresh_token"]]
    assert kid_of(elsewhere) == new_kid
    response = http.get(f"{base}/Patient?_count=1", headers=bearer(elsewhere))
    assert response.status_code == 200, response.text

    # Used for the first time now, after the server learnt that its key is retired.
    assert http.get(f"{base}/Patient?_count=1", headers=bearer(before)).status_code == 200
    published = {key["kid"] for key in http.get(deployment.config["jwks_uri"]).json()["keys"]}
    assert {old_kid, new_kid} <= published
    newest = deployment.password_grant("admin", ADMIN_PASSWORD)["access_token"]
    assert kid_of(newest) == new_kid
    assert http.get(f"{base}/Patient?_count=1", headers=bearer(newest)).status_code == 200


async def test_a_token_a_stale_worker_signs_after_a_rotation_lives_its_whole_lifetime(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    base = "http://127.0.0.1:8080/fhir"
    server = worker(data)  # the running server's worker, keys loaded at start
    await server.store.open()
    try:
        await server.users.bootstrap(ADMIN_PASSWORD)
        await server.keys.refresh()
        await asyncio.to_thread(rotate, data)
        await asyncio.sleep(FORCED_REFRESH_GAP + 0.1)  # so that the token is issued after it
        answer = await password_grant_in(server, base, "admin", ADMIN_PASSWORD)
        token = answer["access_token"]
        expires_at = jwt.get_unverified_claims(token)["exp"]
        # Later the worker reads the keys again (after REFRESH_SECONDS, or at an unknown kid).
        await server.keys.refresh(force=True)
        one_second_before_expiry = TokenVerifier(
            server.keys.ring, base, base, clock=lambda: expires_at - 1
        )
        try:
            one_second_before_expiry.verify_access_token(token)
        except InvalidToken as refused:
            pytest.fail(f"an unexpired token is refused ({refused.reason})")
    finally:
        await server.store.close()


# -- 5. what the log must never hold ----------------------------------------------------------


def test_a_refused_token_is_logged_by_the_server(deployment: Deployment) -> None:
    http, base = deployment.http, deployment.server.base
    response = http.get(f"{base}/Condition", headers=bearer("not-a-token"))
    assert response.status_code == 401
    deadline = time.monotonic() + 2
    while "denied GET /fhir/Condition: 401" not in deployment.server.log():
        assert time.monotonic() < deadline, "no 'denied' line in the server log"
        time.sleep(0.05)


def test_no_password_token_or_assertion_reaches_the_server_log(deployment: Deployment) -> None:
    """Runs last in this module: the secrets of every test above, and a few more made here
    (a failed login, a refused token, a refused assertion) so it means something alone too."""
    http, base = deployment.http, deployment.server.base
    wrong_password = f"Wr0ng-{secrets.token_urlsafe(12)}"
    refused = http.post(
        deployment.token_url,
        data={
            "grant_type": "password",
            "client_id": CONSOLE,
            "username": "admin",
            "password": wrong_password,
        },
    )
    assert refused.status_code == 400
    answer = deployment.password_grant("drsmith", DOCTOR_PASSWORD)
    bad_token = answer["access_token"][:-6] + "abcdef"
    assert http.get(f"{base}/Patient", headers=bearer(bad_token)).status_code == 401
    stranger_pem, _ = service_key()
    forged = client_assertion(stranger_pem, deployment.token_url)
    assert (
        http.post(
            deployment.token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": JWT_BEARER,
                "client_assertion": forged,
            },
        ).status_code
        == 401
    )
    log = deployment.server.log()
    assert "Rofecare" in log and "127.0.0.1" in log  # the log is there and was written to
    secrets_seen = [*deployment.never_logged, DOCTOR_PASSWORD, wrong_password, bad_token, forged]
    leaked = []
    for secret in secrets_seen:
        # The whole value, and its last 24 characters (a signature or a truncated value).
        if secret in log or secret[-24:] in log:
            leaked.append(secret[:12] + "...")
    assert leaked == [], f"{len(leaked)} secrets in the server log: {leaked}"
