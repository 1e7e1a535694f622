"""Turning stored versions and outcomes into HTTP responses.

Stored versions are already FHIR JSON bytes with their meta, so a plain read sends them as
they are, unparsed; only ``_summary``, ``_elements`` and ``_pretty`` pay for a parse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.definitions import Definitions
from fhir_server.errors import BadRequest
from fhir_server.model.ids import weak_etag
from fhir_server.model.instant import http_date, to_instant
from fhir_server.model.outcome import Issue, informational, operation_outcome
from fhir_server.model.subset import SUMMARY_MODES, select_elements, summarize
from fhir_server.storage.base import StoredVersion


def base_url(request: Request) -> str:
    """The FHIR base of links: the configured public URL, else what the client called.

    Read from the raw ASGI scope and memoized: rebuilding ``request.url`` for every response
    cost several percent of a read.
    """
    scope = request.scope
    known: str | None = scope.get(BASE_URL_KEY)
    if known is not None:  # asked again for the same request (the token's audience, links)
        return known
    settings = request.app.state.settings
    if settings.public_base_url:
        configured: str = settings.public_base_url
        found = configured.rstrip("/")
    else:
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        server = scope.get("server")
        found = _base(scope["scheme"], host, tuple(server) if server else None, settings.base_path)
    scope[BASE_URL_KEY] = found
    return found


BASE_URL_KEY = "rofecare.base_url"  # in the ASGI scope


_HOST = re.compile(rb"(?:[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


@functools.lru_cache(maxsize=64)
def _base(scheme: str, host: bytes | None, server: tuple[str, int] | None, base_path: str) -> str:
    # A Host header that is not a plain host[:port] (e.g. 'evil/phish?x=') never reaches a
    # link; behind a proxy set ROFECARE_PUBLIC_BASE_URL so links never depend on it at all.
    if host and _HOST.fullmatch(host):
        netloc = host.decode("ascii")
    elif server:
        netloc = f"{server[0]}:{server[1]}"
    else:
        netloc = "localhost"
    return f"{scheme}://{netloc}{base_path}"


def json_response(
    content: Any,
    status: int,
    media_type: str,
    *,
    pretty: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    if isinstance(content, bytes) and not pretty:
        body = content
    else:
        if isinstance(content, bytes):
            content = orjson.loads(content)
        body = orjson.dumps(content, option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(body, status, headers, media_type=f"{media_type}; charset=utf-8")


def version_headers(request: Request, version: StoredVersion) -> dict[str, str]:
    versioned = (
        f"{base_url(request)}/{version.resource_type}/{version.resource_id}"
        f"/_history/{version.version_id}"
    )
    return {
        "ETag": weak_etag(version.version_id),
        "Last-Modified": http_date(version.last_updated),
        "Content-Location": versioned,
    }


def resource_response(
    request: Request,
    version: StoredVersion,
    media_type: str,
    *,
    status: int = 200,
    pretty: bool = False,
) -> Response:
    """A read/vread answer with ETag and Last-Modified; applies _summary and _elements."""
    assert version.body is not None
    content: bytes | dict[str, Any] = version.body
    summary = request.query_params.get("_summary")
    elements = request.query_params.get("_elements")
    if summary is not None or elements is not None:
        definitions: Definitions = request.app.state.definitions
        content = _subset(orjson.loads(version.body), summary, elements, definitions)
    return json_response(
        content, status, media_type, pretty=pretty, headers=version_headers(request, version)
    )


def _subset(
    resource: dict[str, Any],
    summary: str | None,
    elements: str | None,
    definitions: Definitions,
) -> dict[str, Any]:
    sets = definitions.elements.get(resource["resourceType"])
    if summary is not None:
        if summary not in SUMMARY_MODES or summary == "count":
            raise BadRequest(
                f"_summary={summary!r} is not valid here (true, false, text, data)",
                rofecare_code="rofecare-1508",
            )
        return summarize(resource, summary, sets)
    assert elements is not None
    return select_elements(resource, elements.split(","), sets)


def write_response(
    request: Request,
    version: StoredVersion,
    media_type: str,
    *,
    status: int,
    pretty: bool = False,
    warnings: Sequence[Issue] = (),
) -> Response:
    """The answer to create/update/patch per the ``Prefer`` header (http.html#ops); the
    write's ``warnings`` go with the OperationOutcome asked for."""
    headers = version_headers(request, version)
    if status == 201:
        headers["Location"] = headers["Content-Location"]
    prefer = preferred_return(request)
    if prefer == "minimal":
        return Response(None, status, headers)
    if prefer == "OperationOutcome":
        outcome = operation_outcome([written(version), *warnings])
        return json_response(outcome, status, media_type, pretty=pretty, headers=headers)
    assert version.body is not None
    return json_response(version.body, status, media_type, pretty=pretty, headers=headers)


def written(version: StoredVersion) -> Issue:
    """The information issue of a successful write."""
    return informational(
        f"{version.resource_type}/{version.resource_id} is now at version {version.version_id}"
    )


def preferred_return(request: Request, default: str = "representation") -> str:
    """``Prefer: return=...``: minimal, representation or OperationOutcome (else ``default``)."""
    prefer = request.headers.get("prefer", "")
    for part in prefer.split(","):
        for token in part.split(";"):
            name, _, value = token.strip().partition("=")
            if name.strip().lower() == "return":
                value = value.strip().strip('"')
                if value in ("minimal", "representation", "OperationOutcome"):
                    return value
    return default


def self_link(request: Request, query: str | None = None) -> str:
    """This request's URL, rebuilt on the FHIR base (never from the raw Host header)."""
    base_path: str = request.app.state.settings.base_path
    path = request.url.path.removeprefix(base_path)
    query = request.url.query if query is None else query
    return f"{base_url(request)}{path}" + (f"?{query}" if query else "")


def history_bundle(
    request: Request,
    versions: list[StoredVersion],
    next_link: str | None,
) -> bytes:
    """A history Bundle (https://hl7.org/fhir/R4/http.html#history), newest version first."""
    base = base_url(request)
    links = [{"relation": "self", "url": self_link(request)}]
    if next_link:
        links.append({"relation": "next", "url": next_link})
    entries = []
    for version in versions:
        url = f"{version.resource_type}/{version.resource_id}"
        entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
        if version.body is not None:
            entry["resource"] = orjson.Fragment(version.body)
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(version.method, "200 OK")
        entry["request"] = {
            "method": version.method,
            "url": version.resource_type if version.method == "POST" else url,
        }
        entry["response"] = {
            "status": status,
            "etag": weak_etag(version.version_id),
            "lastModified": to_instant(version.last_updated),
        }
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": "history", "link": links, "entry": entries}
    return orjson.dumps(bundle)
