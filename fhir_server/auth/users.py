"""Users, roles and clients: the rules of the Identity context, over the private store.

The seed's Identity invariants live here, once, for the CLI and the login endpoints alike:
a user has at least one active role, passwords follow the policy, and an account locks
after N consecutive failed attempts (DESIGN.md, "The seed's invariants").
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from fhir_server.auth.identity import (
    Client,
    ClientKind,
    GrantType,
    IdentityStore,
    User,
    secret_digest,
)
from fhir_server.auth.passwords import PasswordHasher, PasswordPolicy
from fhir_server.auth.roles import ROLE_NAMES
from fhir_server.auth.scopes import ScopeSet

CONSOLE_CLIENT_ID = "rofecare-console"
CONSOLE_SCOPE = "user/*.cruds openid fhirUser offline_access"
ADMIN_USERNAME = "admin"


class IdentityError(ValueError):
    """A request the Identity rules refuse; the message is safe to show to the operator."""


class LoginFailed(Exception):
    """Why a login failed; ``reason`` goes to the audit trail, never to the client (which
    sees one message for all of them, so it cannot probe for usernames or locks)."""

    def __init__(self, reason: str, user: User | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user = user


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int = 5
    seconds: int = 900


class Users:
    def __init__(
        self,
        store: IdentityStore,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        lockout: LockoutPolicy,
        clock: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self.store = store
        self._hasher = hasher
        self._policy = policy
        self._lockout = lockout
        self._clock = clock

    # -- first start -------------------------------------------------------------------------

    async def bootstrap(self, admin_password: str | None) -> str | None:
        """On an empty store: the ``admin`` user and the first-party console client.

        Returns the generated password (to be printed once, and never stored in clear) or
        None when the store already had users or the password was given. It is random and
        strong, and shown only once, so it is not forced to change: the console's password
        grant can use it at once. Safe when several servers start together on one store."""
        generated: str | None = None
        if await self.store.count_users() == 0:
            password = admin_password or generate_password()
            try:
                await self.add_user(ADMIN_USERNAME, password, ("admin",))
                generated = None if admin_password else password
            except IdentityError:
                if await self.store.user_by_name(ADMIN_USERNAME) is None:
                    raise  # refused by the policy, not taken by a twin
                # Another server starting at the same moment (two containers on one
                # database) created it first: its password is the one printed.
        # Also when users were added with the CLI before the first start.
        if await self.store.client(CONSOLE_CLIENT_ID) is None:
            try:
                await self.add_client(
                    CONSOLE_CLIENT_ID,
                    name="Rofecare console",
                    kind="public",
                    grant_types=("password", "refresh_token", "authorization_code"),
                    scope=CONSOLE_SCOPE,
                )
            except IdentityError:
                if await self.store.client(CONSOLE_CLIENT_ID) is None:
                    raise
        return generated

    # -- users -------------------------------------------------------------------------------

    async def add_user(
        self,
        username: str,
        password: str,
        roles: Iterable[str],
        *,
        fhir_user: str | None = None,
        must_change: bool = False,
    ) -> User:
        username = username.strip()
        if not username or len(username) > 64 or not username.isprintable() or " " in username:
            raise IdentityError("A username is 1-64 printable characters without spaces")
        role_names = _check_roles(roles)
        self._check_password(password, username)
        user = User(
            id=secrets.token_hex(8),
            username=username,
            password_hash=await self._hash(password),
            fhir_user=fhir_user,
            roles=role_names,
            must_change_password=must_change,
            created_at=self._clock(),
        )
        try:
            await self.store.add_user(user)
        except ValueError as taken:
            raise IdentityError(str(taken)) from None
        return user

    async def require(self, username: str) -> User:
        user = await self.store.user_by_name(username)
        if user is None:
            raise IdentityError(f"No user {username!r}")
        return user

    async def set_password(self, username: str, password: str, *, must_change: bool) -> None:
        user = await self.require(username)
        self._check_password(password, user.username)
        await self.store.set_password(user.id, await self._hash(password), must_change=must_change)
        await self.store.revoke_user_tokens(user.id)  # a reset ends every session

    async def change_own_password(self, username: str, current: str, new: str) -> None:
        """The user's own change (after a reset or the first login): proves the old one."""
        user = await self.authenticate(username, current, allow_expired=True)
        if current == new:
            raise IdentityError("The new password must differ from the current one")
        self._check_password(new, user.username)
        await self.store.set_password(user.id, await self._hash(new), must_change=False)
        await self.store.revoke_user_tokens(user.id)

    async def set_active(self, username: str, active: bool) -> None:
        user = await self.require(username)
        await self.store.set_active(user.id, active)

    async def grant(self, username: str, role: str) -> tuple[str, ...]:
        user = await self.require(username)
        roles = tuple(sorted({*user.roles, *_check_roles([role])}))
        await self.store.set_roles(user.id, roles)
        return roles

    async def revoke(self, username: str, role: str) -> tuple[str, ...]:
        user = await self.require(username)
        if role not in user.roles:
            raise IdentityError(f"{username} does not hold the role {role!r}")
        roles = tuple(r for r in user.roles if r != role)
        if not roles:
            raise IdentityError(
                f"{role!r} is the last role of {username}: a user keeps at least one role "
                "(disable the user instead)"
            )
        await self.store.set_roles(user.id, roles)
        return roles

    async def authenticate(
        self, username: str, password: str, *, allow_expired: bool = False
    ) -> User:
        """The user whose password this is, or ``LoginFailed`` with the reason.

        A locked account is refused before its password is checked, so guessing during
        the lock teaches nothing; an unknown username costs the time of a verification,
        so response times do not reveal which usernames exist."""
        now = self._clock()
        user = await self.store.user_by_name(username) if len(username) <= 64 else None
        if user is None:
            await asyncio.to_thread(self._hasher.dummy_verify, password)
            raise LoginFailed("unknown-user")
        if user.locked_until > now:
            await asyncio.to_thread(self._hasher.dummy_verify, password)
            raise LoginFailed("locked", user)
        if not await asyncio.to_thread(self._hasher.verify, user.password_hash, password):
            after = await self.store.record_failure(
                user.id, self._lockout.threshold, now + self._lockout.seconds
            )
            raise LoginFailed("locked-now" if after.locked_until > now else "bad-password", after)
        if not user.active:
            raise LoginFailed("disabled", user)
        if not user.roles:
            raise LoginFailed("no-role", user)
        if user.must_change_password and not allow_expired:
            raise LoginFailed("password-change-required", user)
        if user.failed_attempts or user.locked_until:
            await self.store.record_success(user.id)
        if self._hasher.needs_rehash(user.password_hash):
            await self.store.set_password(
                user.id, await self._hash(password), must_change=user.must_change_password
            )
        return replace(user, failed_attempts=0, locked_until=0)

    async def _hash(self, password: str) -> str:
        # argon2id takes ~150 ms of CPU by design: never on the event loop.
        return await asyncio.to_thread(self._hasher.hash, password)

    def _check_password(self, password: str, username: str) -> None:
        problems = self._policy.problems(password, username)
        if problems:
            raise IdentityError("The password is refused: " + " ".join(problems))

    # -- clients -----------------------------------------------------------------------------

    async def add_client(
        self,
        client_id: str,
        *,
        name: str,
        kind: ClientKind,
        grant_types: Iterable[GrantType],
        scope: str,
        redirect_uris: Iterable[str] = (),
        jwks: dict[str, object] | None = None,
        with_secret: bool = False,
    ) -> tuple[Client, str | None]:
        """Register a client; returns it and its secret (shown once, stored hashed)."""
        if not client_id or len(client_id) > 128 or not client_id.isprintable():
            raise IdentityError("A client id is 1-128 printable characters")
        grants = tuple(grant_types)
        uris = tuple(redirect_uris)
        ScopeSet.parse(scope)  # InvalidScope (a ValueError) names the bad one
        if kind == "public" and (with_secret or jwks is not None):
            raise IdentityError("A public client has no secret and no keys (it uses PKCE)")
        if kind == "confidential" and not with_secret and jwks is None:
            raise IdentityError("A confidential client needs a secret or a JWKS")
        if "client_credentials" in grants and jwks is None and not with_secret:
            raise IdentityError("client_credentials needs a confidential client")
        if "authorization_code" in grants and not uris and client_id != CONSOLE_CLIENT_ID:
            raise IdentityError("authorization_code needs at least one redirect URI")
        for uri in uris:
            _check_redirect_uri(uri)
        secret = secrets.token_urlsafe(32) if with_secret else None
        client = Client(
            client_id=client_id,
            name=name,
            kind=kind,
            grant_types=grants,
            scope=scope,
            redirect_uris=uris,
            secret_hash=secret_digest(secret) if secret else None,
            jwks=jwks,
            created_at=self._clock(),
        )
        try:
            await self.store.add_client(client)
        except ValueError as taken:
            raise IdentityError(str(taken)) from None
        return client, secret


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _check_redirect_uri(uri: str) -> None:
    """https, or http on the loopback only (RFC 8252 section 7.3, native apps); no
    credentials and no fragment in it (RFC 6749 section 3.1.2). Parsed, not prefix-matched:
    ``http://localhost.attacker.example`` and ``http://127.0.0.1@attacker.example`` are
    remote hosts."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise IdentityError(f"Redirect URI {uri!r} is not a URL") from None
    if parts.fragment or "#" in uri:
        raise IdentityError(f"Redirect URI {uri!r}: no fragment allowed")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise IdentityError(f"Redirect URI {uri!r}: no user or password in it")
    if not parts.hostname:
        raise IdentityError(f"Redirect URI {uri!r} names no host")
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return
    raise IdentityError(f"Redirect URI {uri!r}: https, or http on the loopback address only")


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    names = tuple(sorted(set(roles)))
    if not names:
        raise IdentityError("A user has at least one role")
    unknown = [name for name in names if name not in ROLE_NAMES]
    if unknown:
        raise IdentityError(f"Unknown role {unknown[0]!r}; the roles are: {', '.join(ROLE_NAMES)}")
    return names


def generate_password(length: int = 20) -> str:
    """A random password that satisfies any policy this server accepts (four classes)."""
    alphabet = string.ascii_letters + string.digits + "-_.!@#%+="
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        classes = (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
        if all(classes):
            return password
