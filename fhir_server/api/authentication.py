"""Bearer tokens on every FHIR door (RFC 6750), and the audit of what they read and were denied.

Each protected endpoint is wrapped: the token is verified (signature, issuer, audience =
the FHIR base the request came to, lifetime; see ``auth/tokens.py``), turned into the
request's ``Access`` and set as the access context for the services below. A verified
token is remembered until it expires, so a client's next requests skip the signature check
(the read path stays cheap); the cache is keyed by the whole token, so nothing forged can
hit it.

A 401 or 403 answer, from here or from the services' checks, writes an AuditEvent (issue
6: every denied access is audited) and carries ``WWW-Authenticate`` as RFC 6750 section 3
asks.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.rendering import base_url
from fhir_server.auth.context import Access, enter, leave, set_client_address
from fhir_server.auth.key_manager import KeyManager
from fhir_server.auth.scopes import InvalidScope, ScopeSet
from fhir_server.auth.tokens import InvalidToken, TokenVerifier
from fhir_server.errors import FhirError, Unauthorized
from fhir_server.events.audit import ACTIONS, rest_event
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.services.audit_trail import AuditTrail

log = logging.getLogger("rofecare.auth")

Endpoint = Callable[[Request], Awaitable[Response]]
CACHE_SIZE = 4096
MAX_AUDIENCES = 16
REALM = 'Bearer realm="rofecare"'
APPEND_ONLY_REFUSED = "rofecare-3406"  # an attempt to change the audit trail is audited too


class Authenticator:
    def __init__(self, keys: KeyManager, trail: AuditTrail) -> None:
        self._keys = keys
        self._trail = trail
        self._verifiers: dict[str, TokenVerifier] = {}
        self._verified: OrderedDict[tuple[str, str], tuple[Access, int]] = OrderedDict()

    async def access(self, request: Request) -> Access:
        header = request.headers.get("authorization")
        if header is None:
            raise Unauthorized(
                "This server needs an access token (Authorization: Bearer ...); see "
                "/.well-known/smart-configuration under the FHIR base",
                rofecare_code="rofecare-3401",
                headers={"WWW-Authenticate": REALM},
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _invalid("The Authorization header must be 'Bearer <token>'")
        audience = base_url(request)
        key = (audience, token)
        cached = self._verified.get(key)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        access, expires_at = await self._verify(token, audience)
        self._verified[key] = (access, expires_at)
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return access

    async def _verify(self, token: str, audience: str) -> tuple[Access, int]:
        verifier = self._verifiers.get(audience)
        if verifier is None:
            if len(self._verifiers) >= MAX_AUDIENCES:  # Host headers are the client's to choose
                self._verifiers.clear()
            verifier = TokenVerifier(self._keys.ring, audience, audience)
            self._verifiers[audience] = verifier
        await self._keys.refresh()
        try:
            claims = verifier.verify_access_token(token)
        except InvalidToken as error:
            if error.reason != "unknown-key":
                raise _invalid(f"The access token is refused ({error.reason})") from None
            await self._keys.refresh(force=True)  # another worker may have rotated
            try:
                claims = verifier.verify_access_token(token)
            except InvalidToken as again:
                raise _invalid(f"The access token is refused ({again.reason})") from None
        try:
            scopes = ScopeSet.parse(claims.scope)
        except InvalidScope:
            raise _invalid("The access token's scope is malformed") from None
        access = Access(
            subject=claims.subject,
            client_id=claims.client_id,
            scopes=scopes,
            username=claims.username,
            patient=claims.patient,
            fhir_user=claims.fhir_user,
            roles=claims.roles,
            token_id=claims.token_id,
        )
        return access, claims.expires_at

    def protect(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind a bearer token, its denials audited."""

        async def protected(request: Request) -> Response:
            client = request.client
            set_client_address(client.host if client else None)
            try:
                access = await self.access(request)
            except FhirError as error:
                await self.audit_denial(request, None, error)
                raise
            token = enter(access)
            try:
                return await endpoint(request)
            except FhirError as error:
                if error.status in (401, 403) or error.rofecare_code == APPEND_ONLY_REFUSED:
                    await self.audit_denial(request, access, error)
                    if error.status == 403 and "WWW-Authenticate" not in error.headers:
                        error.headers["WWW-Authenticate"] = f'{REALM}, error="insufficient_scope"'
                raise
            finally:
                leave(token)

        protected.__name__ = endpoint.__name__
        return protected

    async def audit_denial(self, request: Request, access: Access | None, error: FhirError) -> None:
        client = request.client
        event = rest_event(
            access=access,
            interaction=_interaction(request),
            action=ACTIONS.get(request.method, "E"),
            recorded=to_instant(now_utc()),
            entities=[],
            outcome="4",
            description=f"{error.status} {error.diagnostics}",
            queries=[f"{request.method} {request.url.path}"],
            source_ip=client.host if client else None,
        )
        if access is None:
            event["agent"] = [
                {
                    "who": {"display": "unauthenticated client"},
                    "requestor": True,
                    **({"network": {"address": client.host[:100], "type": "2"}} if client else {}),
                }
            ]
        await self._trail.event(event)
        log.info(
            "denied %s %s: %s (%s)",
            request.method,
            request.url.path[:200],
            error.status,
            error.rofecare_code,
        )


def _invalid(message: str) -> Unauthorized:
    return Unauthorized(
        message,
        rofecare_code="rofecare-3402",
        headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
    )


def _interaction(request: Request) -> str:
    method = request.method
    params = request.path_params
    if method == "POST" and "resource_type" not in params:
        return "transaction"
    if "operation" in params:
        return "operation"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method, "read" if "resource_id" in params else "search-type")
