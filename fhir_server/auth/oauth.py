"""The OAuth 2 token endpoint's rules: client authentication and the grants.

https://www.rfc-editor.org/rfc/rfc6749 (grants and errors, section 5.2), SMART App Launch 2
(https://hl7.org/fhir/smart-app-launch/app-launch.html), SMART Backend Services
(https://hl7.org/fhir/smart-app-launch/backend-services.html), RFC 7636 (PKCE), RFC 7523
(private_key_jwt), the OAuth 2.0 Security BCP (refresh token rotation and reuse detection).

No HTTP here: the API layer hands over the form and the Basic credentials and renders the
answer or the ``OAuthError``. What is granted is always the intersection of what the client
asked for, what the client was registered for, and what the user's roles allow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jose import jwt as jose_jwt
from jose.exceptions import JOSEError

from fhir_server.auth.assertions import InvalidAssertion, verify_client_assertion
from fhir_server.auth.identity import (
    AuthorizationCode,
    Client,
    IdentityStore,
    RefreshToken,
    User,
    secret_digest,
)
from fhir_server.auth.key_manager import KeyManager
from fhir_server.auth.roles import scopes_of
from fhir_server.auth.scopes import InvalidScope, ResourceScope, ScopeSet
from fhir_server.auth.tokens import TokenIssuer
from fhir_server.auth.users import LoginFailed, Users

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_FIELD = 8192  # no form field of a token request is longer (assertions included)


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error; ``description`` is safe to show to the client."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class PasswordChangeRequired(OAuthError):
    """The password was right but must be replaced first (an administrator's temporary one)."""

    def __init__(self) -> None:
        super().__init__(
            "invalid_grant",
            "The password must be changed first: sign in on the login page (or ask an "
            "administrator: rofecare user set-password)",
        )


@dataclass(frozen=True)
class LoginEvent:
    """A login attempt, for the audit trail (written by the caller)."""

    username: str | None
    client_id: str | None
    outcome: str  # "success", or the failure reason
    user: User | None = None


AuditLogin = Callable[[LoginEvent], Awaitable[None]]


@dataclass(frozen=True)
class TokenSettings:
    access_lifetime: int
    refresh_lifetime: int
    password_grant: bool
    code_lifetime: int = 60


class AuthorizationServer:
    def __init__(
        self,
        users: Users,
        store: IdentityStore,
        keys: KeyManager,
        settings: TokenSettings,
        audit_login: AuditLogin,
        clock: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self._users = users
        self._store = store
        self._keys = keys
        self._settings = settings
        self._audit_login = audit_login
        self._clock = clock

    async def client(self, client_id: str) -> Client | None:
        return await self._store.client(client_id)

    # -- the token endpoint ------------------------------------------------------------------

    async def token(
        self,
        form: Mapping[str, str],
        basic: tuple[str, str] | None,
        *,
        issuer: str,
        token_url: str,
    ) -> dict[str, Any]:
        for name, value in form.items():
            if len(value) > MAX_FIELD:
                raise OAuthError("invalid_request", f"{name[:40]} is too long")
        grant_type = form.get("grant_type", "")
        handlers = {
            "password": self._password,
            "refresh_token": self._refresh,
            "client_credentials": self._client_credentials,
            "authorization_code": self._authorization_code,
        }
        handler = handlers.get(grant_type)
        if handler is None:
            raise OAuthError(
                "unsupported_grant_type", f"grant_type {grant_type[:40]!r} is not supported"
            )
        try:
            client = await self.authenticate_client(form, basic, token_url)
        except OAuthError as refused:
            claimed = (basic[0] if basic else form.get("client_id")) or ""
            event = LoginEvent(
                None, claimed[:128] or None, f"client refused: {refused.description}"
            )
            await self._audit_login(event)
            raise
        if grant_type not in client.grant_types:
            raise OAuthError(
                "unauthorized_client", f"This client may not use the {grant_type} grant"
            )
        await self._keys.refresh()
        issue = TokenIssuer(self._keys.ring, issuer, self._settings.access_lifetime, self._clock)
        return await handler(form, client, issue, issuer)

    async def authenticate_client(
        self, form: Mapping[str, str], basic: tuple[str, str] | None, token_url: str
    ) -> Client:
        """The calling client, authenticated as it was registered (RFC 6749 section 2.3):
        a public client by its id alone, a confidential one by its secret (Basic or form)
        or by a signed assertion (private_key_jwt). 401 ``invalid_client`` otherwise."""
        assertion = form.get("client_assertion")
        client_id = basic[0] if basic else form.get("client_id")
        if assertion is not None:
            if form.get("client_assertion_type") != JWT_BEARER:
                raise OAuthError("invalid_client", "client_assertion_type must be jwt-bearer", 401)
            client_id = client_id or _assertion_issuer(assertion)
        if not client_id:
            raise OAuthError("invalid_client", "No client_id", 401)
        client = await self._store.client(client_id)
        if client is None or not client.active:
            raise OAuthError("invalid_client", "Unknown or disabled client", 401)
        if assertion is not None:
            await self._check_assertion(client, assertion, token_url)
        elif client.secret_hash is not None:
            secret = basic[1] if basic else form.get("client_secret", "")
            if not hmac.compare_digest(secret_digest(secret), client.secret_hash):
                raise OAuthError("invalid_client", "Client authentication failed", 401)
        elif client.kind != "public":
            raise OAuthError("invalid_client", "This client authenticates with a signed JWT", 401)
        return client

    async def _check_assertion(self, client: Client, assertion: str, token_url: str) -> None:
        if client.jwks is None:
            raise OAuthError("invalid_client", "This client has no registered keys", 401)
        try:
            claims = verify_client_assertion(
                assertion,
                client_id=client.client_id,
                client_jwks=client.jwks,
                token_url=token_url,
                seen=lambda jti, expires_at: False,  # checked below, atomically in the store
                clock=self._clock,
            )
        except InvalidAssertion as error:
            raise OAuthError(
                "invalid_client", f"Client assertion refused ({error.reason})", 401
            ) from None
        if await self._store.remember_jti(
            client.client_id, str(claims["jti"]), int(claims["exp"]), self._clock()
        ):
            raise OAuthError("invalid_client", "Client assertion refused (replay)", 401)

    # -- grants ------------------------------------------------------------------------------

    async def _password(
        self, form: Mapping[str, str], client: Client, issue: TokenIssuer, issuer: str
    ) -> dict[str, Any]:
        """Resource-owner password grant, for first-party clients such as rofecare-console
        (configurable off: third-party apps must use the authorization code flow)."""
        if not self._settings.password_grant:
            raise OAuthError("unsupported_grant_type", "The password grant is turned off")
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password:
            raise OAuthError("invalid_request", "username and password are required")
        user = await self.login(username, password, client.client_id)
        scope = self._user_grant(client, user, form.get("scope") or client.scope)
        return await self._answer(issue, issuer, client, user, scope, patient=None, nonce=None)

    async def login(self, username: str, password: str, client_id: str | None) -> User:
        """Check a password and audit the attempt; one message for every failure."""
        try:
            user = await self._users.authenticate(username, password)
        except LoginFailed as failed:
            # An unknown username is not recorded as typed: it may be a password typed into
            # the wrong field.
            named = username if failed.user is not None else None
            await self._audit_login(LoginEvent(named, client_id, failed.reason, failed.user))
            if failed.reason == "password-change-required":
                raise PasswordChangeRequired from None
            raise OAuthError("invalid_grant", "Invalid username or password") from None
        await self._audit_login(LoginEvent(username, client_id, "success", user))
        return user

    async def change_password(
        self, username: str, current: str, new: str, client_id: str | None
    ) -> None:
        """The user's own change on the login page; the policy's refusal is an
        ``IdentityError`` (its message is safe to show), a wrong password ``OAuthError``."""
        try:
            await self._users.change_own_password(username, current, new)
        except LoginFailed as failed:
            await self._audit_login(LoginEvent(username, client_id, failed.reason, failed.user))
            raise OAuthError("invalid_grant", "Invalid username or password") from None
        await self._audit_login(LoginEvent(username, client_id, "password-changed"))

    async def _refresh(
        self, form: Mapping[str, str], client: Client, issue: TokenIssuer, issuer: str
    ) -> dict[str, Any]:
        presented = form.get("refresh_token", "")
        now = self._clock()
        token = await self._store.use_refresh_token(secret_digest(presented))
        if token is None or token.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Unknown refresh token")
        if token.used or token.revoked:
            # A used token presented again: it was stolen or replayed. End the family, so
            # whoever holds the newer token must log in again too.
            await self._store.revoke_family(token.family)
            await self._audit_login(LoginEvent(None, client.client_id, "refresh-token-reuse"))
            raise OAuthError("invalid_grant", "Refresh token already used; log in again")
        if token.expires_at <= now:
            raise OAuthError("invalid_grant", "Refresh token expired; log in again")
        user = await self._store.user_by_id(token.user_id)
        if user is None or not user.active or user.locked_until > now or not user.roles:
            raise OAuthError("invalid_grant", "The user can no longer log in")
        scope = token.scope
        if form.get("scope"):
            narrowed = _parse(form["scope"])
            original = _parse(token.scope)
            scope = str(original.grant(narrowed)) if narrowed.resource_scopes else scope
        # Roles may have changed since: grant again from the current ones.
        scope = self._user_grant(client, user, scope)
        # A rotated token ends when its family does: rotation does not extend a session.
        answer = await self._answer(
            issue,
            issuer,
            client,
            user,
            scope,
            patient=token.patient,
            nonce=None,
            family=(token.family, token.expires_at),
        )
        # A revocation (or a detected reuse) between taking the token and storing the next
        # one would miss the next one: look again, and end the family if it happened.
        again = await self._store.refresh_token(token.digest)
        if again is None or again.revoked:
            await self._store.revoke_family(token.family)
            raise OAuthError("invalid_grant", "The session was revoked; log in again")
        return answer

    async def _client_credentials(
        self, form: Mapping[str, str], client: Client, issue: TokenIssuer, issuer: str
    ) -> dict[str, Any]:
        """SMART Backend Services: system/ scopes for a registered service, no user."""
        if client.kind != "confidential":
            raise OAuthError(
                "unauthorized_client", "client_credentials needs a confidential client"
            )
        requested = _parse(form.get("scope") or client.scope)
        granted = _parse(client.scope).grant(requested)
        resource_scopes = tuple(s for s in granted.resource_scopes if s.context == "system")
        if not resource_scopes:
            raise OAuthError("invalid_scope", "No requested system/ scope is allowed")
        scope = str(ScopeSet(resource_scopes, frozenset()))
        token, claims = issue.issue_access_token(
            subject=client.client_id, client_id=client.client_id, scope=scope, audience=issuer
        )
        await self._audit_login(LoginEvent(None, client.client_id, "success"))
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims.expires_at - claims.issued_at,
            "scope": scope,
        }

    async def _authorization_code(
        self, form: Mapping[str, str], client: Client, issue: TokenIssuer, issuer: str
    ) -> dict[str, Any]:
        """RFC 6749 section 4.1.3 with PKCE S256 (RFC 7636), required of every client."""
        code = await self._store.take_code(secret_digest(form.get("code", "")))
        now = self._clock()
        if code is None or code.client_id != client.client_id or code.expires_at <= now:
            raise OAuthError("invalid_grant", "Unknown, used or expired authorization code")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization's")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not hmac.compare_digest(
            pkce_challenge(verifier), code.code_challenge
        ):
            raise OAuthError("invalid_grant", "PKCE code_verifier does not match")
        user = await self._store.user_by_id(code.user_id)
        if user is None or not user.active or not user.roles:
            raise OAuthError("invalid_grant", "The user can no longer log in")
        return await self._answer(
            issue,
            issuer,
            client,
            user,
            code.scope,
            patient=code.patient,
            nonce=code.nonce,
            auth_time=code.auth_time,
        )

    async def issue_code(
        self,
        client: Client,
        user: User,
        *,
        redirect_uri: str,
        scope: str,
        code_challenge: str,
        patient: str | None,
        nonce: str | None,
    ) -> str:
        """An authorization code for the login page to hand back to the app."""
        code = secrets.token_urlsafe(32)
        now = self._clock()
        await self._store.add_code(
            AuthorizationCode(
                digest=secret_digest(code),
                client_id=client.client_id,
                user_id=user.id,
                redirect_uri=redirect_uri,
                scope=scope,
                code_challenge=code_challenge,
                expires_at=now + self._settings.code_lifetime,
                patient=patient,
                nonce=nonce,
                auth_time=now,
            )
        )
        return code

    def user_grant(self, client: Client, user: User, requested: str) -> str:
        return self._user_grant(client, user, requested)

    def _user_grant(self, client: Client, user: User, requested: str) -> str:
        """requested ∩ client's registration ∩ the user's roles; no system/ scopes for users."""
        wanted = _parse(requested)
        allowed = _parse(client.scope)
        by_client = allowed.grant(wanted)
        roles = scopes_of(user.roles)
        by_roles = roles.grant(_expand_wildcards(by_client, roles))
        resource_scopes = tuple(s for s in by_roles.resource_scopes if s.context != "system")
        other = frozenset(s for s in wanted.other if allowed.has(s))
        if not resource_scopes:
            raise OAuthError("invalid_scope", "None of the requested scopes is allowed")
        return str(ScopeSet(resource_scopes, other))

    async def _answer(
        self,
        issue: TokenIssuer,
        issuer: str,
        client: Client,
        user: User,
        scope: str,
        *,
        patient: str | None,
        nonce: str | None,
        family: tuple[str, int] | None = None,
        auth_time: int | None = None,
    ) -> dict[str, Any]:
        granted = _parse(scope)
        token, claims = issue.issue_access_token(
            subject=user.id,
            client_id=client.client_id,
            scope=scope,
            audience=issuer,
            patient=patient,
            fhir_user=user.fhir_user,
            roles=user.roles,
            username=user.username,
        )
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims.expires_at - claims.issued_at,
            "scope": scope,
        }
        if patient is not None:
            answer["patient"] = patient
        if granted.has("openid") and (granted.has("fhirUser") or granted.has("profile")):
            answer["id_token"] = issue.issue_id_token(
                subject=user.id,
                client_id=client.client_id,
                fhir_user=user.fhir_user,
                nonce=nonce,
                auth_time=auth_time or self._clock(),
            )
        if "refresh_token" in client.grant_types and (
            granted.has("offline_access") or granted.has("online_access")
        ):
            answer["refresh_token"] = await self._new_refresh_token(
                client, user, scope, patient, family
            )
        return answer

    async def _new_refresh_token(
        self,
        client: Client,
        user: User,
        scope: str,
        patient: str | None,
        family: tuple[str, int] | None,
    ) -> str:
        """A new refresh token: of a new family, or the next of ``family`` (its id and the
        moment it ends)."""
        value = secrets.token_urlsafe(32)
        now = self._clock()
        expires_at = family[1] if family else now + self._settings.refresh_lifetime
        await self._store.add_refresh_token(
            RefreshToken(
                digest=secret_digest(value),
                family=family[0] if family else secrets.token_hex(12),
                client_id=client.client_id,
                user_id=user.id,
                scope=scope,
                issued_at=now,
                expires_at=expires_at,
                patient=patient,
            )
        )
        return value

    # -- revocation (RFC 7009) and introspection (RFC 7662) ----------------------------------

    async def revoke(
        self, form: Mapping[str, str], basic: tuple[str, str] | None, token_url: str
    ) -> None:
        """Revoke a refresh token (and its family). Access tokens are short-lived JWTs and
        cannot be recalled one by one; an unknown token is not an error (RFC 7009 2.2)."""
        client = await self.authenticate_client(form, basic, token_url)
        token = await self._store.refresh_token(secret_digest(form.get("token", "")))
        if token is not None and token.client_id == client.client_id:
            await self._store.revoke_family(token.family)


def _expand_wildcards(requested: ScopeSet, allowed: ScopeSet) -> ScopeSet:
    """``user/*.rs`` asked by a user who may not read everything means "what I may read":
    each wildcard becomes the concrete types ``allowed`` names, with the letters both have
    (so a console asking for everything gets exactly the user's roles, no more)."""
    expanded = list(requested.resource_scopes)
    for wanted in requested.resource_scopes:
        if wanted.resource_type != "*":
            continue
        for scope in allowed.resource_scopes:
            letters = wanted.interactions & scope.interactions
            compatible = scope.context == wanted.context or (
                scope.context == "user" and wanted.context == "patient"
            )
            if scope.resource_type != "*" and letters and compatible:
                expanded.append(ResourceScope(wanted.context, scope.resource_type, letters))
    return ScopeSet(tuple(expanded), requested.other)


def pkce_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(verifier)) without padding (RFC 7636 section 4.2, S256)."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _parse(scope: str) -> ScopeSet:
    try:
        scopes, _dropped = ScopeSet.parse_lenient(scope)
    except InvalidScope as error:
        raise OAuthError("invalid_scope", str(error)) from None
    return scopes


def _assertion_issuer(assertion: str) -> str | None:
    """The client id a client assertion claims (read unverified, to find its keys)."""
    try:
        claims = jose_jwt.get_unverified_claims(assertion)
    except JOSEError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None
