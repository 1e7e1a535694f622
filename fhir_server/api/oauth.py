"""The OAuth 2 / SMART endpoints, and the documents that announce them.

``[base]/.well-known/smart-configuration`` (SMART App Launch 2, conformance), the OpenID
discovery document and the JWKS are public; the token, revocation and introspection
endpoints authenticate the client themselves. They live at ``/oauth/...`` beside the FHIR
base, which is also the token issuer and audience.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fhir_server.api.rendering import base_url
from fhir_server.auth.context import set_client_address
from fhir_server.auth.key_manager import KeyManager
from fhir_server.auth.oauth import AuthorizationServer, OAuthError
from fhir_server.auth.tokens import InvalidToken, TokenVerifier
from fhir_server.model.instant import now_utc

MAX_FORM_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "profile",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "user/*.cruds",
    "system/*.cruds",
    "patient/*.rs",
    "user/*.rs",
    "system/*.rs",
]


def oauth_base(request: Request) -> str:
    """Where the OAuth endpoints are: the FHIR base's origin."""
    base = base_url(request)
    path: str = request.app.state.settings.base_path
    root = base[: -len(path)] if path and base.endswith(path) else base
    return root + "/oauth"


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content), status, {**NO_STORE, **(headers or {})}, "application/json"
    )


def _error(error: OAuthError) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="rofecare"'} if error.status == 401 else {}
    body = {"error": error.error, "error_description": error.description}
    return _json(body, error.status, headers)


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (RFC 6749 section 3.2): each
    parameter at most once (section 3.1: parameters must not repeat)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "The body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "The request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The body is not a UTF-8 form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"{name[:40]} is given more than once")
        form[name] = value
    return form


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 section 2.3.1: both parts form-urlencoded)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", "Only Basic client authentication here", 401)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "Malformed Basic credentials", 401) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "Malformed Basic credentials", 401)
    return unquote(client_id), unquote(secret)


def _server(request: Request) -> AuthorizationServer:
    server: AuthorizationServer = request.app.state.authorization_server
    return server


def _note_address(request: Request) -> None:
    set_client_address(request.client.host if request.client else None)


async def token(request: Request) -> Response:
    _note_address(request)
    try:
        form = await read_form(request)
        answer = await _server(request).token(
            form,
            basic_credentials(request),
            issuer=base_url(request),
            token_url=oauth_base(request) + "/token",
        )
    except OAuthError as error:
        return _error(error)
    return _json(answer)


async def revoke(request: Request) -> Response:
    try:
        form = await read_form(request)
        await _server(request).revoke(
            form, basic_credentials(request), oauth_base(request) + "/token"
        )
    except OAuthError as error:
        return _error(error)
    return Response(b"", 200, NO_STORE)


async def introspect(request: Request) -> Response:
    """RFC 7662: whether an access token is active, for resource servers and clients that
    authenticate as a registered confidential client."""
    try:
        form = await read_form(request)
        client = await _server(request).authenticate_client(
            form, basic_credentials(request), oauth_base(request) + "/token"
        )
        if client.kind != "confidential":
            raise OAuthError("invalid_client", "Introspection needs a confidential client", 401)
    except OAuthError as error:
        return _error(error)
    keys: KeyManager = request.app.state.keys
    await keys.refresh()
    issuer = base_url(request)
    verifier = TokenVerifier(keys.ring, issuer, issuer)
    try:
        claims = verifier.verify_access_token(form.get("token", ""))
    except InvalidToken:
        return _json({"active": False})
    answer: dict[str, Any] = {
        "active": True,
        "token_type": "Bearer",
        "scope": claims.scope,
        "client_id": claims.client_id,
        "sub": claims.subject,
        "aud": claims.audience,
        "iss": issuer,
        "exp": claims.expires_at,
        "iat": claims.issued_at,
    }
    if claims.patient:
        answer["patient"] = claims.patient
    if claims.fhir_user:
        answer["fhirUser"] = claims.fhir_user
    return _json(answer)


async def jwks(request: Request) -> Response:
    keys: KeyManager = request.app.state.keys
    ring = await keys.refresh()
    document = ring.jwks(int(now_utc().timestamp()))
    return Response(
        orjson.dumps(document), 200, {"Cache-Control": "public, max-age=300"}, "application/json"
    )


async def smart_configuration(request: Request) -> Response:
    """https://hl7.org/fhir/smart-app-launch/conformance.html#using-well-known"""
    oauth = oauth_base(request)
    settings = request.app.state.settings
    grants = ["authorization_code", "client_credentials", "refresh_token"]
    if settings.password_grant_enabled:
        grants.append("password")
    document = {
        "issuer": base_url(request),
        "jwks_uri": f"{oauth}/jwks",
        "authorization_endpoint": f"{oauth}/authorize",
        "token_endpoint": f"{oauth}/token",
        "revocation_endpoint": f"{oauth}/revoke",
        "introspection_endpoint": f"{oauth}/introspect",
        "grant_types_supported": grants,
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "ES256", "ES384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-offline",
            "permission-online",
            "permission-patient",
            "permission-user",
            "permission-v2",
            "permission-v1",
            "sso-openid-connect",
        ],
    }
    return Response(orjson.dumps(document), 200, media_type="application/json")


async def openid_configuration(request: Request) -> Response:
    """OpenID Connect discovery for the id_token this server issues (issuer = FHIR base)."""
    oauth = oauth_base(request)
    document = {
        "issuer": base_url(request),
        "jwks_uri": f"{oauth}/jwks",
        "authorization_endpoint": f"{oauth}/authorize",
        "token_endpoint": f"{oauth}/token",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [request.app.state.settings.signing_algorithm],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
    }
    return Response(orjson.dumps(document), 200, media_type="application/json")


def oauth_routes(base_path: str) -> list[BaseRoute]:
    """The public routes (no bearer token): discovery documents and the OAuth endpoints."""
    from fhir_server.api.authorize import authorize_form, authorize_submit

    return [
        Route(base_path + "/.well-known/smart-configuration", smart_configuration, methods=["GET"]),
        Route(
            base_path + "/.well-known/openid-configuration", openid_configuration, methods=["GET"]
        ),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/revoke", revoke, methods=["POST"]),
        Route("/oauth/introspect", introspect, methods=["POST"]),
        Route("/oauth/jwks", jwks, methods=["GET"]),
        Route("/oauth/authorize", authorize_form, methods=["GET"]),
        Route("/oauth/authorize", authorize_submit, methods=["POST"]),
    ]
