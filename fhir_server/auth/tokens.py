"""Access tokens and OpenID Connect id tokens: issued as signed JWTs, verified strictly.

Access tokens follow the JWT profile for OAuth 2.0 access tokens (RFC 9068: header ``typ``
``at+jwt``, claims ``iss sub aud exp iat jti client_id scope``) with the SMART launch context
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html: ``patient``,
``fhirUser``). Verification follows the JWT best current practices (RFC 8725): the algorithm
comes from our key, never from the token; the key comes from our ring by ``kid``, never from
the token (``jwk``/``jku``/``x5u`` headers are ignored); every claim is checked.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from jose import jws, jwt
from jose.exceptions import JOSEError

from fhir_server.auth.keys import ALGORITHMS, KeyRing

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 section 2.1
MAX_TOKEN_LENGTH = 16_384  # far above any token we issue; bounds the work a stranger causes
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_REQUIRED_ACCESS_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope")


def _now() -> int:
    return int(time.time())


class InvalidToken(Exception):
    """A bearer token that must not be honoured; ``reason`` is short, stable, machine-readable.

    One of: malformed, algorithm, signature, unknown-key, expired, not-yet-valid, issuer,
    audience, type, claims. The message may say more but is for logs, never for the client.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def read_header(token: object) -> dict[str, Any]:
    """The header of a compact JWS, checked for shape only: nothing in it is trusted yet.

    Raises ValueError. Checks the three base64url parts ourselves because the decoder behind
    jose (``base64.urlsafe_b64decode``) silently drops characters outside the alphabet.
    A ``crit`` header is refused: we understand no extension (RFC 7515 section 4.1.11).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("not a compact JWS of reasonable size")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ValueError("not three dot-separated parts")
    if not all(_SEGMENT.fullmatch(part) for part in parts):
        raise ValueError("not base64url")
    try:
        header = jwt.get_unverified_header(token)
    except JOSEError as error:
        raise ValueError(f"undecodable header ({error})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    if "crit" in header:
        raise ValueError("critical header extensions are not supported")
    return header


def read_payload(payload: bytes) -> dict[str, Any]:
    """The claims of a verified JWS payload; ValueError if not a JSON object."""
    try:
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("payload is not JSON") from None
    if not isinstance(claims, dict):
        raise ValueError("payload is not a JSON object")
    return claims


def numeric_date(value: object) -> int | None:
    """A NumericDate claim (RFC 7519 section 2) as whole seconds, None if not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return int(value)


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token grants (RFC 9068 section 2.2, SMART launch context)."""

    subject: str
    client_id: str
    scope: str
    audience: str
    issued_at: int
    expires_at: int
    token_id: str
    patient: str | None = None
    fhir_user: str | None = None
    roles: tuple[str, ...] = ()
    username: str | None = None  # "preferred_username": names the user in the audit trail


class TokenIssuer:
    """Signs tokens with the ring's current signing key; ``keys`` is read per token so a
    rotation takes effect without restarting."""

    def __init__(
        self,
        keys: Callable[[], KeyRing],
        issuer: str,
        access_token_lifetime: int,
        clock: Callable[[], int] = _now,
    ) -> None:
        if access_token_lifetime <= 0:
            raise ValueError("access_token_lifetime must be positive")
        self._keys = keys
        self._issuer = issuer
        self._lifetime = access_token_lifetime
        self._clock = clock

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        ring = self._keys()
        if self._lifetime > ring.max_token_lifetime:
            # The ring's grace would end before our tokens do: a rotation would cut them off.
            raise ValueError("access_token_lifetime exceeds the key ring's max_token_lifetime")
        key = ring.signing_key
        token: str = jws.sign(claims, key.signer, {"kid": key.kid, "typ": typ}, key.algorithm)
        return token

    def issue_access_token(
        self,
        *,
        subject: str,
        client_id: str,
        scope: str,
        audience: str,
        patient: str | None = None,
        fhir_user: str | None = None,
        roles: Sequence[str] = (),
        username: str | None = None,
    ) -> tuple[str, AccessClaims]:
        """An RFC 9068 access token and the claims it carries."""
        now = self._clock()
        granted = AccessClaims(
            subject=subject,
            client_id=client_id,
            scope=scope,
            audience=audience,
            issued_at=now,
            expires_at=now + self._lifetime,
            token_id=secrets.token_urlsafe(16),
            patient=patient,
            fhir_user=fhir_user,
            roles=tuple(roles),
            username=username,
        )
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience,
            "exp": granted.expires_at,
            "iat": now,
            "nbf": now,
            "jti": granted.token_id,
            "client_id": client_id,
            "scope": scope,
        }
        if patient is not None:
            claims["patient"] = patient
        if fhir_user is not None:
            claims["fhirUser"] = fhir_user
        if granted.roles:
            claims["rofecare_roles"] = list(granted.roles)
        if username is not None:
            claims["preferred_username"] = username
        return self._sign(claims, "at+jwt"), granted

    def issue_id_token(
        self,
        *,
        subject: str,
        client_id: str,
        fhir_user: str | None,
        nonce: str | None,
        auth_time: int,
    ) -> str:
        """An OpenID Connect id_token (OIDC Core section 2) for the client, with SMART's
        ``fhirUser`` (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html)."""
        now = self._clock()
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": client_id,
            "exp": now + self._lifetime,
            "iat": now,
            "auth_time": auth_time,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if fhir_user is not None:
            claims["fhirUser"] = fhir_user
        return self._sign(claims, "JWT")


class TokenVerifier:
    """Checks a bearer access token from first byte to last claim (RFC 8725 section 3)."""

    def __init__(
        self,
        keys: Callable[[], KeyRing],
        issuer: str,
        audience: str | Collection[str],
        clock: Callable[[], int] = _now,
        leeway: int = 30,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audiences = frozenset([audience] if isinstance(audience, str) else audience)
        self._clock = clock
        self._leeway = leeway

    def verify_access_token(self, token: str) -> AccessClaims:
        """Reject (InvalidToken with the reason): not three base64url parts or undecodable
        header ("malformed"); alg not in {RS256, ES256} — alg=none, HS256 (the key-confusion
        attack where a public key is used as an HMAC secret), anything else ("algorithm");
        no kid or unknown kid or kid past its grace ("unknown-key"); bad signature
        ("signature"); typ not at+jwt ("type"); iss mismatch; aud mismatch; exp in the past
        (with leeway); nbf/iat in the future beyond leeway; missing required claims ("claims").

        Missing or mistyped claims are "claims" even for iss/aud/exp, so "issuer", "audience"
        and "expired" always mean a present, well-formed value that is wrong.
        """
        try:
            header = read_header(token)
        except ValueError as error:
            raise InvalidToken("malformed", str(error)) from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken("algorithm", f"alg {alg!r} is not accepted")
        now = self._clock()
        kid = header.get("kid")
        key = self._keys().verification_key(kid, now) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown-key", "no current key has this kid")
        if alg != key.algorithm:
            raise InvalidToken("algorithm", f"key {key.kid} signs {key.algorithm}, not {alg}")
        try:
            # Our key object is bound to its algorithm; algorithms= is a second lock.
            payload = jws.verify(token, key.verifier, algorithms=[key.algorithm])
        except JOSEError:
            raise InvalidToken("signature", "signature verification failed") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidToken("type", f"typ {typ!r} is not an access token")
        try:
            claims = read_payload(payload)
        except ValueError as error:
            raise InvalidToken("malformed", str(error)) from None
        return self._check_claims(claims, now)

    def _check_claims(self, claims: dict[str, Any], now: int) -> AccessClaims:
        missing = [name for name in _REQUIRED_ACCESS_CLAIMS if name not in claims]
        if missing:
            raise InvalidToken("claims", f"missing {', '.join(missing)}")
        strings = ("iss", "sub", "jti", "client_id", "scope")
        if not all(isinstance(claims[name], str) and claims[name] for name in strings):
            raise InvalidToken("claims", "iss, sub, jti, client_id and scope must be strings")
        exp, iat = numeric_date(claims["exp"]), numeric_date(claims["iat"])
        nbf = numeric_date(claims["nbf"]) if "nbf" in claims else None
        if exp is None or iat is None or ("nbf" in claims and nbf is None):
            raise InvalidToken("claims", "exp, iat and nbf must be numbers")
        audiences = _audiences(claims["aud"])
        optional = (
            claims.get("patient"),
            claims.get("fhirUser"),
            claims.get("preferred_username"),
        )
        roles = claims.get("rofecare_roles", [])
        if (
            audiences is None
            or not all(value is None or isinstance(value, str) for value in optional)
            or not isinstance(roles, list)
            or not all(isinstance(role, str) for role in roles)
        ):
            raise InvalidToken("claims", "aud, patient, fhirUser or rofecare_roles mistyped")
        if claims["iss"] != self._issuer:
            raise InvalidToken("issuer", "issued by someone else")
        matched = [aud for aud in audiences if aud in self._audiences]
        if not matched:
            raise InvalidToken("audience", "not meant for this server")
        if now >= exp + self._leeway:
            raise InvalidToken("expired", "the token has expired")
        if (nbf is not None and nbf > now + self._leeway) or iat > now + self._leeway:
            raise InvalidToken("not-yet-valid", "the token is not valid yet")
        return AccessClaims(
            subject=claims["sub"],
            client_id=claims["client_id"],
            scope=claims["scope"],
            audience=matched[0],
            issued_at=iat,
            expires_at=exp,
            token_id=claims["jti"],
            patient=claims.get("patient"),
            fhir_user=claims.get("fhirUser"),
            roles=tuple(roles),
            username=claims.get("preferred_username"),
        )


def _audiences(aud: object) -> list[str] | None:
    """``aud`` as a list: one string or an array of strings (RFC 7519 section 4.1.3)."""
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        return list(aud)
    return None
