"""Client authentication by signed assertion (``private_key_jwt``).

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html) and
asymmetric client authentication for confidential apps
(https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html) use RFC 7523
section 2.2: the client signs a short-lived JWT with a key from its registered JWKS, and the
token endpoint checks it instead of a shared secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from jose import jwk, jws
from jose.backends.base import Key
from jose.exceptions import JOSEError

from fhir_server.auth.tokens import numeric_date, read_header, read_payload

# SMART requires RS384 and ES384 support; RS256/ES256 are common and as strong as we need.
ASSERTION_ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
}
# Only the public members: a JWKS that (wrongly) carries "d" must not turn into a private key.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}


def _now() -> int:
    return int(time.time())


class InvalidAssertion(Exception):
    """A client assertion to refuse (OAuth ``invalid_client``); ``reason`` is stable.

    One of: malformed, algorithm, unknown-key, signature, issuer, subject, audience, claims,
    expired, not-yet-valid, lifetime (exp too far ahead), replay.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def _candidate_jwks(header: Mapping[str, Any], client_jwks: Mapping[str, Any]) -> list[Any]:
    """The client's JWKs the header's ``kid`` names (or its only key when there is no kid)."""
    keys = client_jwks.get("keys") if isinstance(client_jwks, Mapping) else None
    if not isinstance(keys, list):
        raise InvalidAssertion("unknown-key", "the client has no JWK Set")
    kid = header.get("kid")
    if kid is None:
        if len(keys) == 1:
            return list(keys)
        raise InvalidAssertion("unknown-key", "no kid, and the client has several keys")
    found = [key for key in keys if isinstance(key, Mapping) and key.get("kid") == kid]
    if not found:
        raise InvalidAssertion("unknown-key", "the kid is not in the client's JWK Set")
    return found


def _verification_key(jwk_dict: Any, alg: str) -> Key | None:
    """A jose public key for ``alg`` from one JWK, or None if that JWK cannot sign ``alg``."""
    if not isinstance(jwk_dict, Mapping):
        return None
    kty, curve = ASSERTION_ALGORITHMS[alg]
    if jwk_dict.get("kty") != kty or jwk_dict.get("alg", alg) != alg:
        return None
    if jwk_dict.get("use", "sig") != "sig":
        return None
    if curve is not None and jwk_dict.get("crv") != curve:
        return None  # RFC 7518 section 3.4: ES256 is P-256 only, ES384 P-384 only
    members = _PUBLIC_MEMBERS[kty]
    if not all(isinstance(jwk_dict.get(name), str) for name in members):
        return None
    public = {"kty": kty, **{name: jwk_dict[name] for name in members}}
    try:
        return jwk.construct(public, alg)
    except (JOSEError, ValueError, KeyError, TypeError):
        return None


def _verified_payload(assertion: str, keys: list[Key], alg: str) -> bytes:
    """The payload, if one of the candidate keys (all bound to ``alg``) verifies it."""
    for key in keys:
        try:
            payload: bytes = jws.verify(assertion, key, algorithms=[alg])
        except JOSEError:
            continue
        return payload
    raise InvalidAssertion("signature", "signature verification failed")


def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    client_jwks: Mapping[str, Any],
    token_url: str | Collection[str],
    seen: Callable[[str, int], bool],
    clock: Callable[[], int] = _now,
    max_lifetime: int = 300,
) -> dict[str, Any]:
    """Checks: header alg in {RS256, RS384, ES256, ES384} and equal to the matching JWK's alg if
    the JWK names one (no none/HS*); kid present and found in client_jwks["keys"] (or, when the
    JWKS has exactly one key and the header has no kid, that key); signature; iss == sub ==
    client_id; aud equals token_url (or one of them); exp present, in the future, and at most
    max_lifetime seconds after now (SMART: exp no more than 5 minutes in the future); jti
    present; ``seen(jti, exp)`` returns True if this jti was already used (replay) -> reject
    with reason "replay" — the callable records the jti otherwise. Returns the claims.

    ``seen`` is asked last, so a forged or stale assertion never burns a jti; it should keep
    each jti until its ``exp`` and scope it to this client (RFC 7523 section 3, item 7).
    """
    try:
        header = read_header(assertion)
    except ValueError as error:
        raise InvalidAssertion("malformed", str(error)) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASSERTION_ALGORITHMS:
        raise InvalidAssertion("algorithm", f"alg {alg!r} is not accepted")
    candidates = _candidate_jwks(header, client_jwks)
    keys = [key for key in (_verification_key(c, alg) for c in candidates) if key is not None]
    if not keys:
        raise InvalidAssertion("algorithm", f"no key of the client is usable with {alg}")
    payload = _verified_payload(assertion, keys, alg)
    try:
        claims = read_payload(payload)
    except ValueError as error:
        raise InvalidAssertion("malformed", str(error)) from None
    _check_claims(claims, client_id, token_url, clock(), max_lifetime)
    if seen(claims["jti"], int(claims["exp"])):
        raise InvalidAssertion("replay", "this jti was already used")
    return claims


def _check_claims(
    claims: Mapping[str, Any],
    client_id: str,
    token_url: str | Collection[str],
    now: int,
    max_lifetime: int,
) -> None:
    exp = numeric_date(claims.get("exp"))
    jti = claims.get("jti")
    if exp is None or not isinstance(jti, str) or not jti:
        raise InvalidAssertion("claims", "exp and jti are required")
    if claims.get("iss") != client_id:
        raise InvalidAssertion("issuer", "iss is not the client_id")
    if claims.get("sub") != client_id:
        raise InvalidAssertion("subject", "sub is not the client_id")
    accepted = {token_url} if isinstance(token_url, str) else set(token_url)
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(item, str) and item in accepted for item in audiences):
        raise InvalidAssertion("audience", "aud is not this token endpoint")
    if now >= exp:
        raise InvalidAssertion("expired", "the assertion has expired")
    if exp > now + max_lifetime:
        raise InvalidAssertion("lifetime", f"exp is more than {max_lifetime} s ahead")
    if "nbf" in claims:
        nbf = numeric_date(claims["nbf"])
        if nbf is None:
            raise InvalidAssertion("claims", "nbf must be a number")
        if nbf > now:
            raise InvalidAssertion("not-yet-valid", "the assertion is not valid yet")
