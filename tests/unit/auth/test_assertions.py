"""private_key_jwt client assertions (SMART Backend Services, RFC 7523) and their rejections."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jws

from fhir_server.auth.assertions import InvalidAssertion, verify_client_assertion

CLIENT = "backend-app"
TOKEN_URL = "https://rofecare.example/auth/token"
T0 = 1_700_000_000


def b64url_json(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class ClientKey:
    """A client's key pair: the private PEM it signs with, the public JWK it registered."""

    def __init__(self, kid: str, alg: str, private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        self.kid, self.alg = kid, alg
        self.pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_pem = public_pem
        self.jwk: dict[str, Any] = {**jwk.construct(public_pem, alg).to_dict(), "kid": kid}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        token: str = jws.sign(claims, self.pem, {"kid": self.kid, **header}, self.alg)
        return token


class Seen:
    """The replay cache the token endpoint would keep (per client, until exp)."""

    def __init__(self) -> None:
        self.jtis: dict[str, int] = {}

    def __call__(self, jti: str, exp: int) -> bool:
        if jti in self.jtis:
            return True
        self.jtis[jti] = exp
        return False


@pytest.fixture(scope="module")
def rsa_client() -> ClientKey:
    return ClientKey("rsa-1", "RS384", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="module")
def ec_client() -> ClientKey:
    return ClientKey("ec-1", "ES384", ec.generate_private_key(ec.SECP384R1()))


@pytest.fixture(scope="module")
def other_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": TOKEN_URL,
        "exp": T0 + 240,
        "iat": T0,
        "jti": "jti-1",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def verify(assertion: Any, jwks: dict[str, Any], seen: Seen | None = None) -> dict[str, Any]:
    return verify_client_assertion(
        assertion,
        client_id=CLIENT,
        client_jwks=jwks,
        token_url=TOKEN_URL,
        seen=seen or Seen(),
        clock=lambda: T0,
    )


def reason_of(assertion: Any, jwks: dict[str, Any], seen: Seen | None = None) -> str:
    with pytest.raises(InvalidAssertion) as caught:
        verify(assertion, jwks, seen)
    return caught.value.reason


@pytest.fixture(scope="module")
def jwks(rsa_client: ClientKey, ec_client: ClientKey) -> dict[str, Any]:
    return {"keys": [rsa_client.jwk, ec_client.jwk]}


@pytest.mark.parametrize("which", ["rsa_client", "ec_client"])
def test_valid_assertion(request: pytest.FixtureRequest, jwks: dict[str, Any], which: str) -> None:
    client: ClientKey = request.getfixturevalue(which)
    seen = Seen()
    assert verify(client.sign(claims()), jwks, seen) == claims()
    assert seen.jtis == {"jti-1": T0 + 240}


@pytest.mark.parametrize("alg", ["RS256", "RS384"])
def test_rsa_jwk_without_alg_accepts_rs256_and_rs384(rsa_client: ClientKey, alg: str) -> None:
    bare = {k: v for k, v in rsa_client.jwk.items() if k != "alg"}
    token = jws.sign(claims(), rsa_client.pem, {"kid": rsa_client.kid}, alg)
    assert verify(token, {"keys": [bare]})["jti"] == "jti-1"


def test_replayed_jti(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    seen = Seen()
    token = ec_client.sign(claims())
    verify(token, jwks, seen)
    assert reason_of(token, jwks, seen) == "replay"
    assert reason_of(ec_client.sign(claims(exp=T0 + 100)), jwks, seen) == "replay"


def test_rejected_assertion_does_not_burn_its_jti(
    ec_client: ClientKey, jwks: dict[str, Any]
) -> None:
    seen = Seen()
    assert reason_of(ec_client.sign(claims(aud="https://elsewhere")), jwks, seen) == "audience"
    assert seen.jtis == {}
    verify(ec_client.sign(claims()), jwks, seen)


def test_wrong_audience(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    for aud in ("https://rofecare.example/auth/authorize", [], ["https://a"], 5):
        assert reason_of(ec_client.sign(claims(aud=aud)), jwks) == "audience"


def test_audience_list_and_several_token_urls(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    verify(ec_client.sign(claims(aud=["https://other", TOKEN_URL])), jwks)
    verified = verify_client_assertion(
        ec_client.sign(claims(aud="https://internal/token")),
        client_id=CLIENT,
        client_jwks=jwks,
        token_url=[TOKEN_URL, "https://internal/token"],
        seen=Seen(),
        clock=lambda: T0,
    )
    assert verified["aud"] == "https://internal/token"


def test_issuer_and_subject_must_be_the_client(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    assert reason_of(ec_client.sign(claims(iss="someone-else")), jwks) == "issuer"
    assert reason_of(ec_client.sign(claims(sub="someone-else")), jwks) == "subject"
    assert reason_of(ec_client.sign(claims(iss=None)), jwks) == "issuer"


def test_exp_too_far_ahead(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    assert reason_of(ec_client.sign(claims(exp=T0 + 301)), jwks) == "lifetime"
    verify(ec_client.sign(claims(exp=T0 + 300)), jwks)


def test_expired(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    assert reason_of(ec_client.sign(claims(exp=T0)), jwks) == "expired"
    assert reason_of(ec_client.sign(claims(exp=T0 - 60)), jwks) == "expired"


def test_not_yet_valid(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    assert reason_of(ec_client.sign(claims(nbf=T0 + 60)), jwks) == "not-yet-valid"


@pytest.mark.parametrize("missing", ["exp", "jti"])
def test_required_claims(ec_client: ClientKey, jwks: dict[str, Any], missing: str) -> None:
    assert reason_of(ec_client.sign(claims(**{missing: None})), jwks) == "claims"
    assert reason_of(ec_client.sign(claims(**{missing: ""})), jwks) == "claims"


def test_signed_by_a_key_not_in_the_jwks(
    rsa_client: ClientKey, jwks: dict[str, Any], other_rsa: rsa.RSAPrivateKey
) -> None:
    impostor = ClientKey(rsa_client.kid, "RS384", other_rsa)
    assert reason_of(impostor.sign(claims()), jwks) == "signature"
    stranger = ClientKey("not-registered", "RS384", other_rsa)
    assert reason_of(stranger.sign(claims()), jwks) == "unknown-key"


def test_kid_rules(rsa_client: ClientKey, ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    no_kid = jws.sign(claims(), ec_client.pem, None, "ES384")
    assert verify(no_kid, {"keys": [ec_client.jwk]})["sub"] == CLIENT
    assert reason_of(no_kid, jwks) == "unknown-key"  # several keys: which one?
    assert reason_of(ec_client.sign(claims()), {"keys": []}) == "unknown-key"
    assert reason_of(ec_client.sign(claims()), {}) == "unknown-key"


def test_alg_none(ec_client: ClientKey, jwks: dict[str, Any]) -> None:
    for alg in ("none", "None", None):
        header = {"alg": alg, "kid": ec_client.kid, "typ": "JWT"}
        assert reason_of(f"{b64url_json(header)}.{b64url_json(claims())}.", jwks) == "algorithm"


def test_hs256_with_the_public_key_as_secret(rsa_client: ClientKey, jwks: dict[str, Any]) -> None:
    header = {"alg": "HS256", "kid": rsa_client.kid, "typ": "JWT"}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims())}"
    for secret in (rsa_client.public_pem, json.dumps(rsa_client.jwk).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        assert reason_of(f"{signing_input}.{signature}", jwks) == "algorithm"


def test_alg_must_fit_the_jwk(rsa_client: ClientKey, ec_client: ClientKey) -> None:
    # The JWK names RS384: an RS256 signature by the very same key is refused.
    rs256 = jws.sign(claims(), rsa_client.pem, {"kid": rsa_client.kid}, "RS256")
    assert reason_of(rs256, {"keys": [rsa_client.jwk]}) == "algorithm"
    # An EC key cannot verify an RS384 header, nor a P-384 key an ES256 one.
    rs_on_ec = {"alg": "RS384", "kid": ec_client.kid}
    token = f"{b64url_json(rs_on_ec)}.{b64url_json(claims())}.c2ln"
    assert reason_of(token, {"keys": [ec_client.jwk]}) == "algorithm"
    bare_ec = {k: v for k, v in ec_client.jwk.items() if k != "alg"}
    es256 = jws.sign(claims(), ec_client.pem, {"kid": ec_client.kid}, "ES256")
    assert reason_of(es256, {"keys": [bare_ec]}) == "algorithm"
    # Algorithms outside the allow-list, even asymmetric ones.
    ps = {"alg": "PS384", "kid": rsa_client.kid}
    token = f"{b64url_json(ps)}.{b64url_json(claims())}.c2ln"
    assert reason_of(token, {"keys": [rsa_client.jwk]}) == "algorithm"


def test_private_members_in_a_registered_jwk_are_ignored(ec_client: ClientKey) -> None:
    leaky = {**jwk.construct(ec_client.pem, "ES384").to_dict(), "kid": ec_client.kid}
    assert "d" in leaky
    verify(ec_client.sign(claims()), {"keys": [leaky]})


@pytest.mark.parametrize("assertion", [None, "", "a.b", "a.b.c.d", "abc.def.gh!"])
def test_malformed(jwks: dict[str, Any], assertion: Any) -> None:
    assert reason_of(assertion, jwks) == "malformed"
