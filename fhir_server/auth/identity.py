"""The private identity store: users, credentials, roles, OAuth clients, tokens, keys.

None of this is FHIR data and none of it is ever served over FHIR (DESIGN.md, Identity):
a user's clinical identity is a ``Practitioner`` (``fhir_user``), while the password hash,
the refresh tokens and the signing keys live here, behind this protocol. Secrets are kept
only as one-way hashes (passwords: argon2id; refresh tokens, authorization codes and client
secrets: SHA-256 of 256 random bits, which needs no slow hash), except the signing keys,
which the server must be able to use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fhir_server.auth.keys import SigningKey

ClientKind = Literal["public", "confidential"]
GrantType = Literal["authorization_code", "refresh_token", "client_credentials", "password"]


def secret_digest(secret: str) -> str:
    """The stored form of a high-entropy secret (token, code, client secret)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    id: str
    username: str
    password_hash: str = field(repr=False)
    fhir_user: str | None = None  # "Practitioner/123": who this user is in the record
    roles: tuple[str, ...] = ()
    active: bool = True
    failed_attempts: int = 0
    locked_until: int = 0  # unix seconds; 0 = not locked
    must_change_password: bool = False
    created_at: int = 0


@dataclass(frozen=True)
class Client:
    """An OAuth client (a SMART app or a backend service): ``rofecare client add``."""

    client_id: str
    name: str
    kind: ClientKind
    grant_types: tuple[GrantType, ...]
    scope: str  # what the client may ever be granted (SMART v2 scopes)
    redirect_uris: tuple[str, ...] = ()
    secret_hash: str | None = field(default=None, repr=False)
    jwks: dict[str, object] | None = None  # public keys of a backend service (private_key_jwt)
    active: bool = True
    created_at: int = 0


@dataclass(frozen=True)
class RefreshToken:
    """One refresh token of a rotation family: using it issues the next one and marks this
    one used; presenting a used token again means it leaked, and the family is revoked
    (OAuth 2.0 Security BCP, section 4.14.2)."""

    digest: str
    family: str
    client_id: str
    user_id: str
    scope: str
    issued_at: int
    expires_at: int
    patient: str | None = None
    used: bool = False
    revoked: bool = False


@dataclass(frozen=True)
class AuthorizationCode:
    digest: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    expires_at: int
    patient: str | None = None
    nonce: str | None = None
    auth_time: int = 0


class IdentityStore(Protocol):
    """What the identity service needs from storage; one implementation per store kind."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # users
    async def add_user(self, user: User) -> None:
        """Raise ``ValueError`` when the username is taken (case-insensitively)."""

    async def user_by_name(self, username: str) -> User | None: ...

    async def user_by_id(self, user_id: str) -> User | None: ...

    async def users(self) -> list[User]: ...

    async def count_users(self) -> int: ...

    async def set_password(self, user_id: str, password_hash: str, *, must_change: bool) -> None:
        """Also clears the failure count and any lock (an administrator's reset)."""

    async def set_active(self, user_id: str, active: bool) -> None: ...

    async def set_roles(self, user_id: str, roles: tuple[str, ...]) -> None: ...

    async def record_failure(self, user_id: str, threshold: int, lock_until: int) -> User:
        """Count one failed login atomically; at ``threshold`` consecutive failures the
        account locks until ``lock_until``. Returns the user as it is now."""

    async def record_success(self, user_id: str) -> None: ...

    # clients
    async def add_client(self, client: Client) -> None: ...

    async def client(self, client_id: str) -> Client | None: ...

    async def clients(self) -> list[Client]: ...

    # refresh tokens and authorization codes
    async def add_refresh_token(self, token: RefreshToken) -> None: ...

    async def use_refresh_token(self, digest: str) -> RefreshToken | None:
        """Mark the token used and return it as it was before; None when unknown."""

    async def revoke_family(self, family: str) -> None: ...

    async def revoke_user_tokens(self, user_id: str) -> None:
        """Every refresh token of the user (a password reset or change ends their sessions)."""

    async def refresh_token(self, digest: str) -> RefreshToken | None: ...

    async def add_code(self, code: AuthorizationCode) -> None: ...

    async def take_code(self, digest: str) -> AuthorizationCode | None:
        """The code, deleted as it is read: a code is good for one exchange only."""

    # client assertion replay protection (RFC 7523 section 3, SMART Backend Services)
    async def remember_jti(self, client_id: str, jti: str, expires_at: int, now: int) -> bool:
        """True when this jti was seen before (a replay); otherwise remember it until it
        expires. Forgets expired ones on the way."""

    # signing keys
    async def signing_keys(self) -> list[SigningKey]: ...

    async def replace_signing_keys(self, expected: list[str], keys: list[SigningKey]) -> bool:
        """Replace the stored keys with ``keys`` if their kids are still ``expected``
        (compare-and-swap: two workers rotating at once make one new key, not two).
        Returns whether the keys were replaced."""
