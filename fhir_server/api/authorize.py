"""The authorization endpoint: a minimal login and consent page (SMART App Launch 2).

https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code. The page
is server-rendered HTML with no script: the user signs in, sees which app asks for what,
picks the patient when the app asked for ``launch/patient``, and approves or denies. The
app gets back a one-time code (bound to its PKCE challenge and exact redirect URI).

Errors about the client itself (unknown client, a redirect URI not registered exactly) are
shown on the page and never redirected: redirecting to an unverified URI is how codes get
stolen (RFC 6749 section 4.1.2.1). Every other error goes back to the app's redirect URI.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fhir_server.api.oauth import read_form
from fhir_server.api.rendering import base_url
from fhir_server.auth.context import set_client_address
from fhir_server.auth.identity import Client
from fhir_server.auth.oauth import AuthorizationServer, OAuthError, PasswordChangeRequired
from fhir_server.auth.roles import scopes_of
from fhir_server.auth.users import IdentityError
from fhir_server.model.ids import is_valid_id
from fhir_server.storage.base import ResourceStore

FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "launch",
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}


class PageError(Exception):
    """An error shown on the page (never redirected)."""


async def authorize_form(request: Request) -> Response:
    params = {name: request.query_params.get(name, "") for name in FIELDS}
    checked = await _checked(request, params)
    if isinstance(checked, Response):
        return checked
    return _login_page(params, checked, message=None)


async def _checked(request: Request, params: dict[str, str]) -> Client | Response:
    """The client of a valid authorization request, or the answer to an invalid one: an
    error page about the client itself, else a redirect carrying the error."""
    try:
        client = await _checked_client(request, params)
    except PageError as error:
        return _page(f"<p class=error>{html.escape(str(error))}</p>", 400)
    try:
        _check_request(request, params)
    except OAuthError as error:
        return _redirect_error(params, error)
    return client


async def authorize_submit(request: Request) -> Response:
    set_client_address(request.client.host if request.client else None)
    try:
        form = await read_form(request)
    except OAuthError as error:
        return _page(f"<p class=error>{html.escape(error.description)}</p>", 400)
    params = {name: form.get(name, "") for name in FIELDS}
    checked = await _checked(request, params)
    if isinstance(checked, Response):
        return checked
    client = checked
    if form.get("decision") != "approve":
        return _redirect_error(params, OAuthError("access_denied", "The user denied access"))
    server: AuthorizationServer = request.app.state.authorization_server
    username, password = form.get("username", ""), form.get("password", "")
    new_password = form.get("new_password")
    try:
        if new_password is not None:
            if new_password != form.get("new_password_again"):
                return _change_page(params, client, "The two new passwords differ", status=400)
            await server.change_password(username, password, new_password, client.client_id)
            password = new_password
        user = await server.login(username, password, client.client_id)
        scope = server.user_grant(client, user, params["scope"])
    except PasswordChangeRequired:
        return _change_page(params, client, "Your password must be changed first", status=200)
    except IdentityError as refused:  # the policy refused the new password
        return _change_page(params, client, str(refused), status=400)
    except OAuthError as error:
        if error.error == "invalid_scope":
            return _redirect_error(params, error)
        return _login_page(params, client, message=error.description, status=401)
    patient = None
    if "launch/patient" in params["scope"].split():
        patient = form.get("patient", "").strip()
        store: ResourceStore = request.app.state.store
        found = await store.read("Patient", patient) if is_valid_id(patient) else None
        if found is None or found.deleted:
            return _login_page(params, client, message="Choose an existing patient", status=400)
        if not scopes_of(user.roles).allows("Patient", "r"):
            return _login_page(params, client, message="You may not open patient records")
    code = await server.issue_code(
        client,
        user,
        redirect_uri=params["redirect_uri"],
        scope=scope,
        code_challenge=params["code_challenge"],
        patient=patient,
        nonce=params["nonce"] or None,
    )
    answer = {"code": code}
    if params["state"]:
        answer["state"] = params["state"]
    return _redirect(params["redirect_uri"], answer)


async def _checked_client(request: Request, params: dict[str, str]) -> Client:
    server: AuthorizationServer = request.app.state.authorization_server
    client = await server.client(params["client_id"]) if params["client_id"] else None
    if client is None or not client.active:
        raise PageError("Unknown or disabled application (client_id)")
    if params["redirect_uri"] not in client.redirect_uris:
        raise PageError("The redirect_uri is not one this application registered")
    if "authorization_code" not in client.grant_types:
        raise PageError("This application may not use the authorization code flow")
    return client


def _check_request(request: Request, params: dict[str, str]) -> None:
    if params["response_type"] != "code":
        raise OAuthError("unsupported_response_type", "response_type must be code")
    if params["aud"].rstrip("/") != base_url(request):
        # SMART: the app names the FHIR server it wants a token for; a token asked for
        # another server must not be issued here.
        raise OAuthError("invalid_request", "aud must be this server's FHIR base URL")
    if params["code_challenge_method"] != "S256" or not 43 <= len(params["code_challenge"]) <= 128:
        raise OAuthError("invalid_request", "PKCE with code_challenge_method=S256 is required")
    if not params["scope"].strip():
        raise OAuthError("invalid_scope", "scope is required")
    if params["launch"]:
        raise OAuthError("invalid_request", "EHR launch is not supported: use standalone launch")


def _carried(params: dict[str, str]) -> tuple[str, str]:
    """The request's parameters as hidden fields, and the patient picker when asked for."""
    hidden = "".join(
        f'<input type=hidden name="{name}" value="{html.escape(value)}">'
        for name, value in params.items()
    )
    patient = (
        "<label>Patient (id)<input name=patient required maxlength=64></label>"
        if "launch/patient" in params["scope"].split()
        else ""
    )
    return hidden, patient


def _login_page(
    params: dict[str, str], client: Client, *, message: str | None, status: int = 200
) -> Response:
    hidden, patient = _carried(params)
    scopes = "".join(f"<li>{html.escape(scope)}</li>" for scope in params["scope"].split())
    error = f"<p class=error>{html.escape(message)}</p>" if message else ""
    body = f"""
<h1>Sign in to Rofecare</h1>
<p><b>{html.escape(client.name)}</b> ({html.escape(client.client_id)}) asks for:</p>
<ul>{scopes}</ul>
{error}
<form method=post action="/oauth/authorize">
{hidden}
<label>Username<input name=username autocomplete=username required maxlength=64></label>
<label>Password<input name=password type=password autocomplete=current-password required></label>
{patient}
<button name=decision value=approve>Sign in and allow</button>
<button name=decision value=deny formnovalidate>Deny</button>
</form>"""
    return _page(body, status)


def _change_page(params: dict[str, str], client: Client, message: str, *, status: int) -> Response:
    """Sign in again with the current password and choose a new one (the current one is
    never written back into the page)."""
    hidden, patient = _carried(params)
    body = f"""
<h1>Choose a new password</h1>
<p>For <b>{html.escape(client.name)}</b>.</p>
<p class=error>{html.escape(message)}</p>
<form method=post action="/oauth/authorize">
{hidden}
<label>Username<input name=username autocomplete=username required maxlength=64></label>
<label>Current password<input name=password type=password autocomplete=current-password
required></label>
<label>New password<input name=new_password type=password autocomplete=new-password
required></label>
<label>New password again<input name=new_password_again type=password
autocomplete=new-password required></label>
{patient}
<button name=decision value=approve>Change, sign in and allow</button>
</form>"""
    return _page(body, status)


def _page(body: str, status: int) -> Response:
    document = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Rofecare sign-in</title>
<style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}label{{display:block;
margin:.6rem 0}}input{{display:block;width:100%}}.error{{color:#a00}}</style></head>
<body>{body}</body></html>"""
    return HTMLResponse(document, status, PAGE_HEADERS)


def _redirect(uri: str, params: dict[str, Any]) -> Response:
    separator = "&" if "?" in uri else "?"
    return RedirectResponse(uri + separator + urlencode(params), 302, PAGE_HEADERS)


def _redirect_error(params: dict[str, str], error: OAuthError) -> Response:
    answer = {"error": error.error, "error_description": error.description}
    if params["state"]:
        answer["state"] = params["state"]
    return _redirect(params["redirect_uri"], answer)
