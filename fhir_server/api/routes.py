"""FHIR RESTful interactions (https://hl7.org/fhir/R4/http.html).

Routes are declared most specific first (``_history``, ``$validate``, ``metadata``) so the
generic ``{type}/{id}`` patterns never swallow them.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from fhir_server.api.body import read_json
from fhir_server.api.dependencies import AppSettings, IfMatch, Service
from fhir_server.api.negotiation import is_pretty, require_json_body, response_media_type
from fhir_server.api.rendering import (
    history_bundle,
    json_response,
    resource_response,
    version_headers,
    write_response,
)
from fhir_server.errors import BadRequest, MethodNotAllowed
from fhir_server.model.ids import parse_etag
from fhir_server.model.instant import parse_date_range
from fhir_server.model.outcome import information
from fhir_server.services.validate_operation import run_validate
from fhir_server.storage.base import HistoryQuery, StoredVersion

router = APIRouter()


# -- conformance -----------------------------------------------------------------------------


@router.get("/metadata")
async def capabilities(request: Request) -> Response:
    """The CapabilityStatement, built once at start-up from what this server implements."""
    media = response_media_type(request)
    return json_response(request.app.state.capability, 200, media, pretty=is_pretty(request))


@router.api_route("/metadata", methods=["POST", "PUT", "PATCH", "DELETE"])
async def capabilities_read_only(request: Request) -> Response:
    raise MethodNotAllowed("The CapabilityStatement is read-only", rofecare_code="rofecare-1405")


# -- history ---------------------------------------------------------------------------------


@router.get("/_history")
async def history_system(request: Request, service: Service, settings: AppSettings) -> Response:
    return await _history(request, service, settings, None, None)


@router.get("/{resource_type}/_history")
async def history_type(
    request: Request, resource_type: str, service: Service, settings: AppSettings
) -> Response:
    return await _history(request, service, settings, resource_type, None)


@router.get("/{resource_type}/{resource_id}/_history")
async def history_instance(
    request: Request, resource_type: str, resource_id: str, service: Service, settings: AppSettings
) -> Response:
    return await _history(request, service, settings, resource_type, resource_id)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
async def vread(
    request: Request, resource_type: str, resource_id: str, version_id: str, service: Service
) -> Response:
    media = response_media_type(request)
    version = await service.vread(resource_type, resource_id, version_id)
    return resource_response(
        request,
        version,
        media,
        pretty=is_pretty(request),
        definitions=request.app.state.definitions,
    )


async def _history(
    request: Request,
    service: Any,
    settings: Any,
    resource_type: str | None,
    resource_id: str | None,
) -> Response:
    media = response_media_type(request)
    params = request.query_params
    query = HistoryQuery(
        resource_type=resource_type,
        resource_id=resource_id,
        since=_instant_param(params.get("_since"), "_since"),
        at=_period_param(params.get("_at")),
        count=_count_param(
            params.get("_count"), settings.default_page_size, settings.max_page_size
        ),
        cursor=_cursor_param(params.get("_cursor")),
    )
    page = await service.history(query)
    next_link = None
    if page.next_cursor is not None:
        kept = [(k, v) for k, v in params.multi_items() if k != "_cursor"]
        kept.append(("_cursor", str(page.next_cursor)))
        next_link = str(request.url.replace(query=urlencode(kept)))
    body = history_bundle(request, page.versions, next_link)
    return json_response(body, 200, media, pretty=is_pretty(request))


def _instant_param(value: str | None, name: str) -> Any:
    if value is None:
        return None
    interval = parse_date_range(value)
    if interval is None:
        raise BadRequest(f"{name}={value!r} is not a FHIR instant", rofecare_code="rofecare-1601")
    return interval[0]


def _period_param(value: str | None) -> Any:
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


@router.post("/{resource_type}/$validate")
async def validate_type(
    request: Request, resource_type: str, service: Service, settings: AppSettings
) -> Response:
    return await _validate(request, service, settings, resource_type, None)


@router.post("/{resource_type}/{resource_id}/$validate")
async def validate_instance(
    request: Request, resource_type: str, resource_id: str, service: Service, settings: AppSettings
) -> Response:
    return await _validate(request, service, settings, resource_type, resource_id)


async def _validate(
    request: Request, service: Any, settings: Any, resource_type: str, resource_id: str | None
) -> Response:
    """``$validate`` (operation-resource-validate.html): the write's checks, nothing written.

    The answer is 200 with an OperationOutcome listing every fault (or an information issue
    when there is none): the operation succeeded even when the resource did not.
    """
    media = response_media_type(request)
    require_json_body(request)
    body = await read_json(request, settings.max_body_bytes)
    outcome = await run_validate(service, resource_type, resource_id, body, request.query_params)
    return json_response(outcome, 200, media, pretty=is_pretty(request))


# -- type level: create, conditional update/delete --------------------------------------------


@router.post("/{resource_type}")
async def create(
    request: Request, resource_type: str, service: Service, settings: AppSettings
) -> Response:
    media = response_media_type(request)
    service.check_type(resource_type)
    require_json_body(request)
    body = await read_json(request, settings.max_body_bytes)
    result = await service.create(resource_type, body, if_none_exist=_create_condition(request))
    status = 201 if result.created else 200
    return write_response(request, result.version, media, status=status, pretty=is_pretty(request))


@router.put("/{resource_type}")
async def conditional_update(
    request: Request, resource_type: str, service: Service, settings: AppSettings, if_match: IfMatch
) -> Response:
    media = response_media_type(request)
    service.check_type(resource_type)
    criteria = _criteria(request, "update")
    require_json_body(request)
    body = await read_json(request, settings.max_body_bytes)
    result = await service.conditional_update(resource_type, criteria, body, if_match=if_match)
    status = 201 if result.created else 200
    return write_response(request, result.version, media, status=status, pretty=is_pretty(request))


@router.delete("/{resource_type}")
async def conditional_delete(request: Request, resource_type: str, service: Service) -> Response:
    media = response_media_type(request)
    service.check_type(resource_type)
    result = await service.conditional_delete(resource_type, _criteria(request, "delete"))
    if result is None:
        outcome = information("No resource matched the condition; nothing was deleted")
        return json_response(outcome, 200, media)
    return _deleted(request, result.version, media)


RESULT_PARAMETERS = ("_format", "_pretty")


def _create_condition(request: Request) -> str | None:
    """The condition of a conditional create: the R4 ``If-None-Exist`` header, or search
    parameters in the query string (``POST Patient?identifier=...``), as sent by clients such
    as fhirpy's ``get_or_create``. Never ignored: an unsupported parameter is a 400."""
    header = request.headers.get("if-none-exist")
    query = urlencode(
        [(k, v) for k, v in request.query_params.multi_items() if k not in RESULT_PARAMETERS]
    )
    if header is not None and query:
        raise BadRequest(
            "Give the condition either in If-None-Exist or in the query string, not both",
            rofecare_code="rofecare-1606",
        )
    return header if header is not None else (query or None)


def _criteria(request: Request, interaction: str) -> str:
    query = request.url.query
    if not query:
        raise MethodNotAllowed(
            f"A type-level {interaction} needs search criteria (conditional {interaction})",
            rofecare_code="rofecare-1605",
        )
    return query


# -- instance level --------------------------------------------------------------------------


@router.get("/{resource_type}/{resource_id}")
async def read(
    request: Request, resource_type: str, resource_id: str, service: Service
) -> Response:
    media = response_media_type(request)
    version = await service.read(resource_type, resource_id)
    if _not_modified(request, version):
        return Response(None, 304, version_headers(request, version))
    return resource_response(
        request,
        version,
        media,
        pretty=is_pretty(request),
        definitions=request.app.state.definitions,
    )


@router.put("/{resource_type}/{resource_id}")
async def update(
    request: Request,
    resource_type: str,
    resource_id: str,
    service: Service,
    settings: AppSettings,
    if_match: IfMatch,
) -> Response:
    media = response_media_type(request)
    service.check_type(resource_type)
    require_json_body(request)
    body = await read_json(request, settings.max_body_bytes)
    result = await service.update(resource_type, resource_id, body, if_match=if_match)
    status = 201 if result.created else 200
    return write_response(request, result.version, media, status=status, pretty=is_pretty(request))


@router.patch("/{resource_type}/{resource_id}")
async def patch(
    request: Request,
    resource_type: str,
    resource_id: str,
    service: Service,
    settings: AppSettings,
    if_match: IfMatch,
) -> Response:
    media = response_media_type(request)
    service.check_type(resource_type)
    require_json_body(request, patch=True)
    body = await read_json(request, settings.max_body_bytes)
    result = await service.patch(resource_type, resource_id, body, if_match=if_match)
    return write_response(request, result.version, media, status=200, pretty=is_pretty(request))


@router.delete("/{resource_type}/{resource_id}")
async def delete(
    request: Request, resource_type: str, resource_id: str, service: Service, if_match: IfMatch
) -> Response:
    media = response_media_type(request)
    result = await service.delete(resource_type, resource_id, if_match=if_match)
    return _deleted(request, result.version, media)


def _deleted(request: Request, version: StoredVersion, media: str) -> Response:
    outcome = information(
        f"{version.resource_type}/{version.resource_id} is deleted (version {version.version_id})"
    )
    return json_response(outcome, 200, media, headers={"ETag": f'W/"{version.version_id}"'})


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
