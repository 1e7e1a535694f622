"""The server's token-signing keys and their rotation.

Access and id tokens are JWS (RFC 7515) signed with an asymmetric key so that anyone can
verify them from the published JWKS (RFC 7517) without sharing a secret; SMART App Launch
points clients at it (https://hl7.org/fhir/smart-app-launch/conformance.html, ``jwks_uri``).
Keys rotate: a retired key stops signing at once but keeps verifying, and stays published,
until the last token it could have signed has expired, so a rotation never logs anyone out.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk
from jose.backends.base import Key

Algorithm = Literal["RS256", "ES256"]
ALGORITHMS: frozenset[str] = frozenset({"RS256", "ES256"})

_RSA_BITS = 2048
_P256_COORDINATE_BYTES = 32


def _b64url_uint(value: int, length: int | None = None) -> str:
    """A JWK integer: big-endian unsigned, unpadded base64url (RFC 7518 section 6.3.1.1)."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    """One signing key pair; only its public half ever leaves the server."""

    kid: str
    algorithm: Algorithm
    # Never logged, never in a repr: a leaked signing key lets anyone mint any token.
    private_pem: str = field(repr=False)
    created_at: int
    retired_at: int | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {self.algorithm!r}")
        if not self.kid:
            raise ValueError("a signing key needs a kid")

    @staticmethod
    def generate(algorithm: Algorithm, now: int) -> SigningKey:
        """A fresh key: RSA 2048 for RS256, P-256 for ES256 (RFC 7518 sections 3.3 and 3.4)."""
        private: PrivateKey
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"unsupported signing algorithm {algorithm!r}")
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return SigningKey(
            kid=secrets.token_urlsafe(12), algorithm=algorithm, private_pem=pem, created_at=now
        )

    @cached_property
    def _private_key(self) -> PrivateKey:
        """The parsed key, checked against the algorithm (a stored PEM could be anything)."""
        loaded = serialization.load_pem_private_key(self.private_pem.encode("ascii"), None)
        if self.algorithm == "RS256":
            if not isinstance(loaded, rsa.RSAPrivateKey) or loaded.key_size < _RSA_BITS:
                raise ValueError(f"key {self.kid}: RS256 needs an RSA key of 2048 bits or more")
            return loaded
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            raise ValueError(f"key {self.kid}: ES256 needs a P-256 key")
        return loaded

    @cached_property
    def signer(self) -> Key:
        """The jose key that signs with this key's own algorithm, whatever a header says."""
        self._private_key  # noqa: B018  (loads and checks the PEM against the algorithm first)
        return jwk.construct(self.private_pem, self.algorithm)

    @cached_property
    def verifier(self) -> Key:
        """The jose key of the public half, bound to this key's algorithm."""
        public = self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return jwk.construct(public, self.algorithm)

    def public_jwk(self) -> dict[str, str]:
        """The public JWK (RFC 7517 section 4, RFC 7518 section 6): no private member."""
        entry = {"kid": self.kid, "alg": self.algorithm, "use": "sig"}
        public = self._private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            return {
                "kty": "RSA",
                **entry,
                "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e),
            }
        point = public.public_numbers()
        return {
            "kty": "EC",
            **entry,
            "crv": "P-256",
            "x": _b64url_uint(point.x, _P256_COORDINATE_BYTES),
            "y": _b64url_uint(point.y, _P256_COORDINATE_BYTES),
        }

    def retire(self, now: int) -> SigningKey:
        """This key, no longer signing from ``now``; a key retired earlier keeps its date."""
        if self.retired_at is not None:
            return self
        return replace(self, retired_at=now)


class KeyRing:
    """The signing keys: the newest unretired key signs; retired keys stay published (JWKS) and
    keep verifying until every token they signed has expired (retired_at + max_token_lifetime),
    so rotation never invalidates a live token.

    Immutable: rotation returns a new ring, which the caller persists and swaps in.
    """

    def __init__(self, keys: Sequence[SigningKey], max_token_lifetime: int) -> None:
        if max_token_lifetime <= 0:
            raise ValueError("max_token_lifetime must be positive")
        kids = [key.kid for key in keys]
        if len(set(kids)) != len(kids):
            raise ValueError("duplicate kid in the key ring")
        self.keys: tuple[SigningKey, ...] = tuple(keys)
        self.max_token_lifetime = max_token_lifetime

    def __repr__(self) -> str:
        return f"KeyRing(keys={self.keys!r}, max_token_lifetime={self.max_token_lifetime})"

    @property
    def signing_key(self) -> SigningKey:
        """The newest unretired key (by ``created_at``, then position); LookupError if none."""
        active = [(key.created_at, index, key) for index, key in enumerate(self.keys)]
        active = [entry for entry in active if entry[2].retired_at is None]
        if not active:
            raise LookupError("no active signing key")
        return max(active, key=lambda entry: (entry[0], entry[1]))[2]

    def _live(self, key: SigningKey, now: int) -> bool:
        # A token signed at retired_at - 1 expires by retired_at + max_token_lifetime - 1.
        return key.retired_at is None or now < key.retired_at + self.max_token_lifetime

    def verification_key(self, kid: str, now: int) -> SigningKey | None:
        """The key named by a token's ``kid``; None when unknown or past its grace."""
        for key in self.keys:
            if key.kid == kid:
                return key if self._live(key, now) else None
        return None

    def jwks(self, now: int) -> dict[str, list[dict[str, str]]]:
        """The JWK Set to publish (RFC 7517 section 5): every key that can still verify."""
        return {"keys": [key.public_jwk() for key in self.keys if self._live(key, now)]}

    def rotated(self, algorithm: Algorithm, now: int) -> tuple[KeyRing, SigningKey]:
        """A ring where a new key signs and every key that signed until now is retired."""
        new = SigningKey.generate(algorithm, now)
        keys = [key.retire(now) for key in self.keys]
        return KeyRing([*keys, new], self.max_token_lifetime), new

    def prunable(self, now: int) -> list[str]:
        """Kids of keys whose grace is over: no live token can name them (the caller deletes)."""
        return [key.kid for key in self.keys if not self._live(key, now)]
