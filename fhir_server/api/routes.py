"""FHIR RESTful interactions (https://hl7.org/fhir/R4/http.html).

Handlers are plain Starlette endpoints taking the request: FastAPI's per-request dependency
solving and path-parameter validation cost a fifth of a read's CPU (measured with py-spy)
and bought nothing here, since every value is checked by the service anyway. The route
table is ordered so that the literal segments (``metadata``, ``_history``, ``$validate``)
win over ``{type}/{id}``, and the most frequent interaction, read, is matched early.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fhir_server.api.audit import audit_read
from fhir_server.api.body import read_json
from fhir_server.api.bundles import transaction_or_batch
from fhir_server.api.negotiation import is_pretty, require_json_body, response_media_type
from fhir_server.api.operations import run_operation
from fhir_server.api.rendering import (
    history_bundle,
    json_response,
    resource_response,
    self_link,
    version_headers,
    write_response,
)
from fhir_server.api.search import compartment_search, system_search, type_search
from fhir_server.config import Settings
from fhir_server.errors import BadRequest, MethodNotAllowed
from fhir_server.model.ids import parse_etag
from fhir_server.model.instant import parse_date_range
from fhir_server.model.outcome import information
from fhir_server.services.resources import ResourceService, WriteResult
from fhir_server.services.validate_operation import run_validate
from fhir_server.storage.base import HistoryQuery, StoredVersion

Endpoint = Callable[[Request], Awaitable[Response]]
RESULT_PARAMETERS = ("_format", "_pretty")


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _if_match(request: Request) -> int | None:
    """The version pinned by ``If-Match: W/"n"``; 400 when the header is not an ETag."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    version = parse_etag(header)
    if version is None:
        raise BadRequest(
            f'If-Match {header[:40]!r} is not an ETag like W/"3"', rofecare_code="rofecare-1509"
        )
    return version


# -- conformance -----------------------------------------------------------------------------


async def capabilities(request: Request) -> Response:
    """The CapabilityStatement, built once at start-up from what this server implements."""
    media = response_media_type(request)
    return json_response(request.app.state.capability, 200, media, pretty=is_pretty(request))


async def capabilities_read_only(request: Request) -> Response:
    raise MethodNotAllowed("The CapabilityStatement is read-only", rofecare_code="rofecare-1405")


# -- read and vread --------------------------------------------------------------------------


async def read(request: Request) -> Response:
    media = response_media_type(request)
    params = request.path_params
    version = await _service(request).read(params["resource_type"], params["resource_id"])
    await audit_read(request, "read", [version])
    if _not_modified(request, version):
        return Response(None, 304, version_headers(request, version))
    return resource_response(request, version, media, pretty=is_pretty(request))


async def vread(request: Request) -> Response:
    media = response_media_type(request)
    params = request.path_params
    version = await _service(request).vread(
        params["resource_type"], params["resource_id"], params["version_id"]
    )
    await audit_read(request, "vread", [version])
    return resource_response(request, version, media, pretty=is_pretty(request))


def _not_modified(request: Request, version: StoredVersion) -> bool:
    """Conditional read (http.html#cread): If-None-Match wins over If-Modified-Since."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = [parse_etag(tag) for tag in if_none_match.split(",")]
        return version.version_id in tags or if_none_match.strip() == "*"
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False  # RFC 9110: an invalid date is ignored
        if since.tzinfo is None:
            return False
        return version.last_updated.replace(microsecond=0) <= since
    return False


# -- history ---------------------------------------------------------------------------------


async def history(request: Request) -> Response:
    """History at system, type or instance level, by which path parameters are present."""
    media = response_media_type(request)
    settings = _settings(request)
    params = request.query_params
    query = HistoryQuery(
        resource_type=request.path_params.get("resource_type"),
        resource_id=request.path_params.get("resource_id"),
        since=_instant_param(params.get("_since")),
        at=_period_param(params.get("_at")),
        count=_count_param(
            params.get("_count"), settings.default_page_size, settings.max_page_size
        ),
        cursor=_cursor_param(params.get("_cursor")),
    )
    page = await _service(request).history(query)
    level = "history-instance" if query.resource_id else "history-type"
    await audit_read(request, level if query.resource_type else "history-system", page.versions)
    next_link = None
    if page.next_cursor is not None and query.count > 0:
        kept = [(k, v) for k, v in params.multi_items() if k != "_cursor"]
        kept.append(("_cursor", str(page.next_cursor)))
        next_link = self_link(request, urlencode(kept))
    body = history_bundle(request, page.versions, next_link)
    return json_response(body, 200, media, pretty=is_pretty(request))


def _instant_param(value: str | None) -> datetime | None:
    if value is None:
        return None
    interval = parse_date_range(value)
    if interval is None:
        raise BadRequest(f"_since={value!r} is not a FHIR instant", rofecare_code="rofecare-1601")
    return interval[0]


def _period_param(value: str | None) -> tuple[datetime, datetime] | None:
    if value is None:
        return None
    interval = parse_date_range(value)
    if interval is None:
        raise BadRequest(f"_at={value!r} is not a FHIR date", rofecare_code="rofecare-1602")
    return interval


def _count_param(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or len(value) > 9:
        raise BadRequest(
            f"_count={value[:20]!r} is not a whole number", rofecare_code="rofecare-1603"
        )
    return min(int(value), maximum)


def _cursor_param(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadRequest("Invalid paging cursor", rofecare_code="rofecare-1604")
    return int(value)


# -- $validate -------------------------------------------------------------------------------


async def validate(request: Request) -> Response:
    """``$validate`` (operation-resource-validate.html): the write's checks, nothing written.

    The answer is 200 with an OperationOutcome listing every fault (or an information issue
    when there is none): the operation succeeded even when the resource did not.
    """
    media = response_media_type(request)
    require_json_body(request)
    body = await read_json(request, _settings(request).max_body_bytes)
    outcome = await run_validate(
        _service(request),
        request.path_params["resource_type"],
        request.path_params.get("resource_id"),
        body,
        request.query_params,
    )
    return json_response(outcome, 200, media, pretty=is_pretty(request))


# -- writes ----------------------------------------------------------------------------------


async def create(request: Request) -> Response:
    media = response_media_type(request)
    service = _service(request)
    resource_type = request.path_params["resource_type"]
    service.check_type(resource_type)
    require_json_body(request)
    body = await read_json(request, _settings(request).max_body_bytes)
    result = await service.create(resource_type, body, if_none_exist=_create_condition(request))
    status = 201 if result.created else 200
    return _answer(request, result, media, status)


def _answer(request: Request, result: WriteResult, media: str, status: int) -> Response:
    """The answer to a create, update or patch, with the warnings of what it wrote."""
    return write_response(
        request,
        result.version,
        media,
        status=status,
        pretty=is_pretty(request),
        warnings=result.warnings,
    )


def _create_condition(request: Request) -> str | None:
    """The condition of a conditional create: the R4 ``If-None-Exist`` header, or search
    parameters in the query string (``POST Patient?identifier=...``), as sent by clients such
    as fhirpy's ``get_or_create``. Never ignored: an unsupported parameter is a 400."""
    header = request.headers.get("if-none-exist")
    query = _condition_query(request)
    if header is not None and query:
        raise BadRequest(
            "Give the condition either in If-None-Exist or in the query string, not both",
            rofecare_code="rofecare-1606",
        )
    return header if header is not None else (query or None)


async def update(request: Request) -> Response:
    media = response_media_type(request)
    service = _service(request)
    resource_type = request.path_params["resource_type"]
    service.check_type(resource_type)
    if_match = _if_match(request)
    require_json_body(request)
    body = await read_json(request, _settings(request).max_body_bytes)
    result = await service.update(
        resource_type, request.path_params["resource_id"], body, if_match=if_match
    )
    status = 201 if result.created else 200
    return _answer(request, result, media, status)


async def conditional_update(request: Request) -> Response:
    media = response_media_type(request)
    service = _service(request)
    resource_type = request.path_params["resource_type"]
    service.check_type(resource_type)
    criteria = _criteria(request, "update")
    if_match = _if_match(request)
    require_json_body(request)
    body = await read_json(request, _settings(request).max_body_bytes)
    result = await service.conditional_update(resource_type, criteria, body, if_match=if_match)
    status = 201 if result.created else 200
    return _answer(request, result, media, status)


async def patch(request: Request) -> Response:
    media = response_media_type(request)
    service = _service(request)
    resource_type = request.path_params["resource_type"]
    service.check_type(resource_type)
    if_match = _if_match(request)
    require_json_body(request, patch=True)
    body = await read_json(request, _settings(request).max_body_bytes)
    result = await service.patch(
        resource_type, request.path_params["resource_id"], body, if_match=if_match
    )
    return _answer(request, result, media, 200)


async def delete(request: Request) -> Response:
    media = response_media_type(request)
    params = request.path_params
    result = await _service(request).delete(
        params["resource_type"], params["resource_id"], if_match=_if_match(request)
    )
    return _deleted(result.version, media)


async def conditional_delete(request: Request) -> Response:
    media = response_media_type(request)
    service = _service(request)
    resource_type = request.path_params["resource_type"]
    service.check_type(resource_type)
    result = await service.conditional_delete(resource_type, _criteria(request, "delete"))
    if result is None:
        outcome = information("No resource matched the condition; nothing was deleted")
        return json_response(outcome, 200, media)
    return _deleted(result.version, media)


def _condition_query(request: Request) -> str:
    """The query string without the parameters that only shape the response."""
    if not request.url.query:
        return ""
    return urlencode(
        [(k, v) for k, v in request.query_params.multi_items() if k not in RESULT_PARAMETERS]
    )


def _criteria(request: Request, interaction: str) -> str:
    query = _condition_query(request)
    if not query:
        raise MethodNotAllowed(
            f"A type-level {interaction} needs search criteria (conditional {interaction})",
            rofecare_code="rofecare-1605",
        )
    return query


def _deleted(version: StoredVersion, media: str) -> Response:
    outcome = information(
        f"{version.resource_type}/{version.resource_id} is deleted (version {version.version_id})"
    )
    return json_response(outcome, 200, media, headers={"ETag": f'W/"{version.version_id}"'})


# -- the route table -------------------------------------------------------------------------

TYPE = "/{resource_type}"
INSTANCE = "/{resource_type}/{resource_id}"
ROUTES: list[tuple[str, Endpoint, list[str]]] = [
    ("/metadata", capabilities, ["GET"]),
    ("/metadata", capabilities_read_only, ["POST", "PUT", "PATCH", "DELETE"]),
    ("", system_search, ["GET"]),
    ("/", system_search, ["GET"]),
    ("", transaction_or_batch, ["POST"]),
    ("/", transaction_or_batch, ["POST"]),
    ("/_search", system_search, ["POST"]),
    ("/_history", history, ["GET"]),
    (TYPE + "/_history", history, ["GET"]),
    (TYPE + "/$validate", validate, ["POST"]),
    (TYPE + "/_search", type_search, ["POST"]),
    (TYPE + "/${operation}", run_operation, ["GET", "POST"]),
    (INSTANCE, read, ["GET"]),
    (INSTANCE, update, ["PUT"]),
    (INSTANCE, patch, ["PATCH"]),
    (INSTANCE, delete, ["DELETE"]),
    (TYPE, type_search, ["GET"]),
    (TYPE, create, ["POST"]),
    (TYPE, conditional_update, ["PUT"]),
    (TYPE, conditional_delete, ["DELETE"]),
    (INSTANCE + "/_history", history, ["GET"]),
    (INSTANCE + "/_history/{version_id}", vread, ["GET"]),
    (INSTANCE + "/$validate", validate, ["POST"]),
    (INSTANCE + "/${operation}", run_operation, ["GET", "POST"]),
    (INSTANCE + "/{target_type}", compartment_search, ["GET"]),
]


PUBLIC = frozenset({capabilities, capabilities_read_only})
"""Answer without a token: the CapabilityStatement is how a client learns where to get one."""


def fhir_routes(
    base_path: str, protect: Callable[[Endpoint], Endpoint] | None = None
) -> list[BaseRoute]:
    """The FHIR route table; ``protect`` wraps every endpoint but the public ones (None:
    authentication off)."""
    return [
        Route(
            base_path + path,
            endpoint if protect is None or endpoint in PUBLIC else protect(endpoint),
            methods=methods,
            include_in_schema=False,
        )
        for path, endpoint, methods in ROUTES
    ]
