"""Signing keys, their rotation, and access-token issue/verify with every rejection reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import pytest
from jose import jws

from fhir_server.auth.keys import Algorithm, KeyRing, SigningKey
from fhir_server.auth.tokens import AccessClaims, InvalidToken, TokenIssuer, TokenVerifier

ISSUER = "https://rofecare.example/auth"
FHIR_BASE = "https://rofecare.example/fhir"
LIFETIME = 600
T0 = 1_700_000_000


class Clock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def decode_part(token: str, index: int) -> dict[str, Any]:
    part: dict[str, Any] = json.loads(unb64url(token.split(".")[index]))
    return part


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.generate("RS256", T0 - 100)


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.generate("ES256", T0 - 100)


@pytest.fixture(scope="module")
def keys(rsa_key: SigningKey, ec_key: SigningKey) -> dict[str, SigningKey]:
    return {"RS256": rsa_key, "ES256": ec_key}


def setup(
    key: SigningKey, clock: Clock | None = None, leeway: int = 30
) -> tuple[TokenIssuer, TokenVerifier, Clock]:
    clock = clock or Clock()
    ring = KeyRing([key], max_token_lifetime=LIFETIME)
    issuer = TokenIssuer(lambda: ring, ISSUER, LIFETIME, clock=clock)
    verifier = TokenVerifier(lambda: ring, ISSUER, FHIR_BASE, clock=clock, leeway=leeway)
    return issuer, verifier, clock


def issue(issuer: TokenIssuer) -> str:
    token, _ = issuer.issue_access_token(
        subject="user-1", client_id="app", scope="patient/*.read", audience=FHIR_BASE
    )
    return token


def sign_claims(key: SigningKey, claims: dict[str, Any], **header: Any) -> str:
    """A token signed properly by ``key`` but with whatever claims and header the test wants."""
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    token: str = jws.sign(claims, key.signer, headers, key.algorithm)
    return token


def valid_claims(now: int = T0) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": FHIR_BASE,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "j-1",
        "client_id": "app",
        "scope": "user/*.read",
    }


def reason_of(verifier: TokenVerifier, token: Any) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_access_token(token)
    return caught.value.reason


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_jwk_has_no_private_parts(keys: dict[str, SigningKey], algorithm: Algorithm) -> None:
    key = keys[algorithm]
    entry = key.public_jwk()
    assert {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}.isdisjoint(entry)
    assert entry["kid"] == key.kid and entry["alg"] == algorithm and entry["use"] == "sig"
    if algorithm == "RS256":
        assert set(entry) == {"kty", "kid", "alg", "use", "n", "e"} and entry["kty"] == "RSA"
        assert entry["e"] == "AQAB" and len(unb64url(entry["n"])) == 256
    else:
        assert set(entry) == {"kty", "kid", "alg", "use", "crv", "x", "y"}
        assert entry["kty"] == "EC" and entry["crv"] == "P-256"
        assert len(unb64url(entry["x"])) == len(unb64url(entry["y"])) == 32


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_published_jwk_verifies_our_tokens(
    keys: dict[str, SigningKey], algorithm: Algorithm
) -> None:
    """What a resource server does with our JWKS: the published key checks the signature."""
    issuer, _, _ = setup(keys[algorithm])
    token = issue(issuer)
    payload = jws.verify(token, keys[algorithm].public_jwk(), algorithms=[algorithm])
    assert json.loads(payload)["sub"] == "user-1"


def test_repr_never_shows_the_private_key(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    for key in (rsa_key, ec_key):
        shown = repr(key) + repr(KeyRing([key], LIFETIME))
        assert key.kid in shown
        assert "PRIVATE" not in shown and key.private_pem not in shown
        assert key.private_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8


def test_generated_kids_are_random(ec_key: SigningKey) -> None:
    other = SigningKey.generate("ES256", T0)
    assert other.kid != ec_key.kid and len(other.kid) == 16


def test_pem_must_match_the_algorithm(rsa_key: SigningKey) -> None:
    mislabelled = replace(rsa_key, algorithm="ES256")
    with pytest.raises(ValueError, match="P-256"):
        mislabelled.public_jwk()


def test_retire_keeps_the_first_date(ec_key: SigningKey) -> None:
    retired = ec_key.retire(T0)
    assert retired.retired_at == T0 and ec_key.retired_at is None
    assert retired.retire(T0 + 50).retired_at == T0


def test_signing_key_is_the_newest_unretired(ec_key: SigningKey) -> None:
    older = replace(ec_key, kid="older", created_at=T0 - 500)
    newer = replace(ec_key, kid="newer", created_at=T0 - 10)
    retired = replace(ec_key, kid="retired", created_at=T0, retired_at=T0)
    assert KeyRing([newer, older, retired], LIFETIME).signing_key.kid == "newer"
    with pytest.raises(LookupError):
        _ = KeyRing([], LIFETIME).signing_key
    with pytest.raises(LookupError):
        _ = KeyRing([retired], LIFETIME).signing_key


def test_ring_refuses_duplicate_kids(ec_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        KeyRing([ec_key, replace(ec_key, created_at=T0)], LIFETIME)


def test_issuer_refuses_tokens_outliving_the_key_grace(ec_key: SigningKey) -> None:
    ring = KeyRing([ec_key], max_token_lifetime=60)
    issuer = TokenIssuer(lambda: ring, ISSUER, access_token_lifetime=61)
    with pytest.raises(ValueError, match="max_token_lifetime"):
        issue(issuer)


# --- issue and verify ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_round_trip(keys: dict[str, SigningKey], algorithm: Algorithm) -> None:
    key = keys[algorithm]
    issuer, verifier, _ = setup(key)
    token, issued = issuer.issue_access_token(
        subject="user-1",
        client_id="app",
        scope="launch/patient patient/*.read",
        audience=FHIR_BASE,
        patient="Patient/p1",
        fhir_user="Practitioner/123",
        roles=["physician", "admin"],
    )
    assert decode_part(token, 0) == {"alg": algorithm, "kid": key.kid, "typ": "at+jwt"}
    claims = decode_part(token, 1)
    assert claims["iss"] == ISSUER and claims["aud"] == FHIR_BASE
    assert claims["exp"] == T0 + LIFETIME and claims["iat"] == claims["nbf"] == T0
    assert claims["fhirUser"] == "Practitioner/123" and claims["patient"] == "Patient/p1"
    assert claims["rofecare_roles"] == ["physician", "admin"]
    verified = verifier.verify_access_token(token)
    assert verified == issued
    assert verified == AccessClaims(
        subject="user-1",
        client_id="app",
        scope="launch/patient patient/*.read",
        audience=FHIR_BASE,
        issued_at=T0,
        expires_at=T0 + LIFETIME,
        token_id=issued.token_id,
        patient="Patient/p1",
        fhir_user="Practitioner/123",
        roles=("physician", "admin"),
    )


def test_optional_claims_are_left_out_when_empty(ec_key: SigningKey) -> None:
    issuer, verifier, _ = setup(ec_key)
    token = issue(issuer)
    assert {"patient", "fhirUser", "rofecare_roles"}.isdisjoint(decode_part(token, 1))
    verified = verifier.verify_access_token(token)
    assert verified.patient is None and verified.fhir_user is None and verified.roles == ()


def test_token_ids_are_unique(ec_key: SigningKey) -> None:
    issuer, verifier, _ = setup(ec_key)
    ids = {verifier.verify_access_token(issue(issuer)).token_id for _ in range(5)}
    assert len(ids) == 5


def test_one_of_several_audiences(ec_key: SigningKey) -> None:
    ring = KeyRing([ec_key], LIFETIME)
    clock = Clock()
    verifier = TokenVerifier(lambda: ring, ISSUER, ["https://other/fhir", FHIR_BASE], clock=clock)
    token = sign_claims(ec_key, {**valid_claims(), "aud": ["https://third", FHIR_BASE]})
    assert verifier.verify_access_token(token).audience == FHIR_BASE


def test_id_token(ec_key: SigningKey) -> None:
    issuer, _, _ = setup(ec_key)
    token = issuer.issue_id_token(
        subject="user-1",
        client_id="app",
        fhir_user="Practitioner/123",
        nonce="n-1",
        auth_time=T0 - 5,
    )
    assert decode_part(token, 0) == {"alg": "ES256", "kid": ec_key.kid, "typ": "JWT"}
    claims = json.loads(jws.verify(token, ec_key.public_jwk(), algorithms=["ES256"]))
    assert claims == {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "app",
        "exp": T0 + LIFETIME,
        "iat": T0,
        "auth_time": T0 - 5,
        "nonce": "n-1",
        "fhirUser": "Practitioner/123",
    }


# --- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        b64url(b"not json") + ".e30.",
        b64url_json(["alg", "RS256"]) + ".e30.",
        "eyJhbGciOiJSUzI1NiJ9!.e30.sig",
        "eyJhbGciOiJSUzI1NiJ9.e30.sig=",
        "x" * 20_000 + ".e30.sig",
    ],
)
def test_malformed(ec_key: SigningKey, token: Any) -> None:
    _, verifier, _ = setup(ec_key)
    assert reason_of(verifier, token) == "malformed"


def test_critical_header_extension_is_refused(ec_key: SigningKey) -> None:
    _, verifier, _ = setup(ec_key)
    token = sign_claims(ec_key, valid_claims(), crit=["exp-ext"], **{"exp-ext": 1})
    assert reason_of(verifier, token) == "malformed"


def test_payload_that_is_not_an_object(ec_key: SigningKey) -> None:
    _, verifier, _ = setup(ec_key)
    token = jws.sign(b"[1, 2]", ec_key.signer, {"kid": ec_key.kid, "typ": "at+jwt"}, "ES256")
    assert reason_of(verifier, token) == "malformed"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_expired(keys: dict[str, SigningKey], algorithm: Algorithm) -> None:
    issuer, verifier, clock = setup(keys[algorithm], leeway=30)
    token = issue(issuer)
    clock.now = T0 + LIFETIME + 29  # within the leeway
    verifier.verify_access_token(token)
    clock.now = T0 + LIFETIME + 30
    assert reason_of(verifier, token) == "expired"


def test_not_yet_valid(ec_key: SigningKey) -> None:
    ring = KeyRing([ec_key], LIFETIME)
    ahead = TokenIssuer(lambda: ring, ISSUER, LIFETIME, clock=Clock(T0 + 31))
    verifier = TokenVerifier(lambda: ring, ISSUER, FHIR_BASE, clock=Clock(T0), leeway=30)
    assert reason_of(verifier, issue(ahead)) == "not-yet-valid"
    slightly_ahead = TokenIssuer(lambda: ring, ISSUER, LIFETIME, clock=Clock(T0 + 30))
    verifier.verify_access_token(issue(slightly_ahead))


def test_nbf_in_the_future(ec_key: SigningKey) -> None:
    _, verifier, _ = setup(ec_key)
    token = sign_claims(ec_key, {**valid_claims(), "nbf": T0 + 120})
    assert reason_of(verifier, token) == "not-yet-valid"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_tampered_payload(keys: dict[str, SigningKey], algorithm: Algorithm) -> None:
    issuer, verifier, _ = setup(keys[algorithm])
    header, _, signature = issue(issuer).split(".")
    forged = {**valid_claims(), "scope": "system/*.*"}
    assert reason_of(verifier, f"{header}.{b64url_json(forged)}.{signature}") == "signature"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_tampered_signature(keys: dict[str, SigningKey], algorithm: Algorithm) -> None:
    issuer, verifier, _ = setup(keys[algorithm])
    header, payload, signature = issue(issuer).split(".")
    raw = bytearray(unb64url(signature))
    raw[len(raw) // 2] ^= 0x01
    assert reason_of(verifier, f"{header}.{payload}.{b64url(bytes(raw))}") == "signature"
    assert reason_of(verifier, f"{header}.{payload}.") == "signature"


def test_alg_none(ec_key: SigningKey) -> None:
    _, verifier, _ = setup(ec_key)
    header: dict[str, Any] = {"alg": "none", "typ": "at+jwt", "kid": ec_key.kid}
    token = f"{b64url_json(header)}.{b64url_json(valid_claims())}."
    assert reason_of(verifier, token) == "algorithm"
    for spelling in ("None", "NONE", "", None):
        header = {"alg": spelling, "typ": "at+jwt", "kid": ec_key.kid}
        token = f"{b64url_json(header)}.{b64url_json(valid_claims())}."
        assert reason_of(verifier, token) == "algorithm"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_hs256_key_confusion(keys: dict[str, SigningKey], algorithm: Algorithm) -> None:
    """The attacker HMACs with what is public: the PEM of the public key, or the JWK text."""
    key = keys[algorithm]
    _, verifier, _ = setup(key)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(valid_claims())}"
    public_pem = key.verifier.to_pem()
    for secret in (public_pem, json.dumps(key.public_jwk()).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert reason_of(verifier, f"{signing_input}.{b64url(mac)}") == "algorithm"


def test_alg_that_is_not_the_keys_own(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    """An RS256 header naming an ES256 key (and the reverse) never reaches a verifier."""
    ring = KeyRing([rsa_key, ec_key], LIFETIME)
    verifier = TokenVerifier(lambda: ring, ISSUER, FHIR_BASE, clock=Clock())
    by_rsa = sign_claims(rsa_key, valid_claims(), kid=ec_key.kid)
    by_ec = sign_claims(ec_key, valid_claims(), kid=rsa_key.kid)
    assert reason_of(verifier, by_rsa) == "algorithm"
    assert reason_of(verifier, by_ec) == "algorithm"
    for alg in ("RS512", "ES384", "PS256", "EdDSA"):
        header = {"alg": alg, "typ": "at+jwt", "kid": rsa_key.kid}
        assert reason_of(verifier, f"{b64url_json(header)}.e30.c2ln") == "algorithm"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_wrong_key_with_the_same_kid(keys: dict[str, SigningKey], algorithm: Algorithm) -> None:
    key = keys[algorithm]
    _, verifier, _ = setup(key)
    impostor = replace(SigningKey.generate(algorithm, T0), kid=key.kid)
    forger, _, _ = setup(impostor)
    assert reason_of(verifier, issue(forger)) == "signature"


def test_unknown_or_missing_kid(ec_key: SigningKey) -> None:
    _, verifier, _ = setup(ec_key)
    other, _, _ = setup(SigningKey.generate("ES256", T0))
    assert reason_of(verifier, issue(other)) == "unknown-key"
    no_kid = jws.sign(valid_claims(), ec_key.signer, {"typ": "at+jwt"}, "ES256")
    assert reason_of(verifier, no_kid) == "unknown-key"
    numeric_kid = sign_claims(ec_key, valid_claims(), kid=7)
    assert reason_of(verifier, numeric_kid) == "unknown-key"


def test_wrong_issuer(ec_key: SigningKey) -> None:
    _, verifier, _ = setup(ec_key)
    token = sign_claims(ec_key, {**valid_claims(), "iss": "https://evil.example"})
    assert reason_of(verifier, token) == "issuer"


def test_wrong_audience(ec_key: SigningKey) -> None:
    issuer, verifier, _ = setup(ec_key)
    token, _ = issuer.issue_access_token(
        subject="u", client_id="app", scope="user/*.read", audience="https://other.example/fhir"
    )
    assert reason_of(verifier, token) == "audience"
    listed = sign_claims(ec_key, {**valid_claims(), "aud": ["https://a", "https://b"]})
    assert reason_of(verifier, listed) == "audience"


def test_id_token_is_not_an_access_token(ec_key: SigningKey) -> None:
    issuer, verifier, _ = setup(ec_key)
    id_token = issuer.issue_id_token(
        subject="user-1", client_id="app", fhir_user=None, nonce=None, auth_time=T0
    )
    assert reason_of(verifier, id_token) == "type"
    untyped = sign_claims(ec_key, valid_claims(), typ=None)
    assert reason_of(verifier, untyped) == "type"


def test_media_type_form_of_typ(ec_key: SigningKey) -> None:
    _, verifier, _ = setup(ec_key)
    verifier.verify_access_token(sign_claims(ec_key, valid_claims(), typ="application/at+JWT"))


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"])
def test_missing_claims(ec_key: SigningKey, claim: str) -> None:
    _, verifier, _ = setup(ec_key)
    claims = valid_claims()
    del claims[claim]
    assert reason_of(verifier, sign_claims(ec_key, claims)) == "claims"


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "tomorrow"},
        {"exp": True},
        {"iat": None},
        {"nbf": "now"},
        {"sub": ""},
        {"scope": ["user/*.read"]},
        {"aud": 42},
        {"aud": []},
        {"patient": 7},
        {"fhirUser": {"reference": "Practitioner/1"}},
        {"rofecare_roles": "admin"},
        {"rofecare_roles": ["admin", 1]},
    ],
)
def test_mistyped_claims(ec_key: SigningKey, changes: dict[str, Any]) -> None:
    _, verifier, _ = setup(ec_key)
    token = sign_claims(ec_key, {**valid_claims(), **changes})
    assert reason_of(verifier, token) == "claims"


# --- rotation ----------------------------------------------------------------------------------


def test_rotation_keeps_live_tokens_until_the_grace_ends() -> None:
    clock = Clock(T0)
    old = SigningKey.generate("ES256", T0 - 1000)
    state = {"ring": KeyRing([old], max_token_lifetime=LIFETIME)}
    issuer = TokenIssuer(lambda: state["ring"], ISSUER, LIFETIME, clock=clock)
    verifier = TokenVerifier(lambda: state["ring"], ISSUER, FHIR_BASE, clock=clock, leeway=0)

    clock.now = T0 + 99
    last_by_old = issue(issuer)  # expires at T0 + 99 + LIFETIME
    clock.now = T0 + 100
    state["ring"], new = state["ring"].rotated("ES256", clock.now)
    ring = state["ring"]
    assert ring.signing_key == new and new.created_at == T0 + 100
    assert [key.retired_at for key in ring.keys] == [T0 + 100, None]
    by_new = issue(issuer)
    assert decode_part(by_new, 0)["kid"] == new.kid

    clock.now = T0 + 98 + LIFETIME  # the old key's last token is still live
    verifier.verify_access_token(last_by_old)
    assert [entry["kid"] for entry in ring.jwks(clock.now)["keys"]] == [old.kid, new.kid]
    assert ring.prunable(clock.now) == []
    assert ring.verification_key(old.kid, clock.now) is not None

    clock.now = T0 + 100 + LIFETIME  # grace over: every token of the old key has expired
    assert reason_of(verifier, last_by_old) == "unknown-key"
    assert ring.verification_key(old.kid, clock.now) is None
    assert [entry["kid"] for entry in ring.jwks(clock.now)["keys"]] == [new.kid]
    assert ring.prunable(clock.now) == [old.kid]
    pruned = KeyRing([k for k in ring.keys if k.kid not in ring.prunable(clock.now)], LIFETIME)
    assert pruned.keys == (new,)


def test_rotating_twice_keeps_each_retirement_date() -> None:
    ring = KeyRing([SigningKey.generate("ES256", T0)], LIFETIME)
    ring, second = ring.rotated("ES256", T0 + 10)
    ring, third = ring.rotated("RS256", T0 + 20)
    assert [key.retired_at for key in ring.keys] == [T0 + 10, T0 + 20, None]
    assert ring.signing_key == third and third.algorithm == "RS256"
    assert ring.prunable(T0 + 10 + LIFETIME) == [ring.keys[0].kid]
    assert second.kid in [entry["kid"] for entry in ring.jwks(T0 + 10 + LIFETIME)["keys"]]
