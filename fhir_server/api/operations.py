"""``[type]/[id]/$operation`` and ``[type]/$operation`` for the registered operations.

https://hl7.org/fhir/R4/operations.html#request: GET carries the arguments in the URL, POST
in a ``Parameters`` body (the URL's are added to them; an empty POST body means "no
arguments"). The registry finds the operation, the shared parser checks its arguments
against its OperationDefinition, and its answer is rendered here, so an operation module
never touches HTTP. Paging links are GET URLs on the FHIR base, as in search.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.audit import audit_read
from fhir_server.api.body import read_json
from fhir_server.api.negotiation import is_pretty, require_json_body, response_media_type
from fhir_server.api.rendering import base_url, json_response
from fhir_server.api.search import searchset_json, strict_handling
from fhir_server.config import Settings
from fhir_server.errors import BadRequest, MethodNotAllowed
from fhir_server.services.operation_parameters import parse_arguments
from fhir_server.services.operations import (
    Level,
    OperationCall,
    OperationRegistry,
    OperationServices,
    PageSize,
    ResourceAnswer,
    Searchset,
)
from fhir_server.services.resources import ResourceService
from fhir_server.storage.base import StoredVersion

KEPT_IN_LINKS = ("_format", "_pretty")


async def run_operation(request: Request) -> Response:
    media = response_media_type(request)
    params = request.path_params
    resource_type: str = params["resource_type"]
    resource_id: str | None = params.get("resource_id")
    service: ResourceService = request.app.state.service
    service.check_type(resource_type)
    if params["operation"] == "validate":  # its own POST route; any other method lands here
        raise MethodNotAllowed(
            "$validate takes POST with the resource or a Parameters body",
            rofecare_code="rofecare-1405",
        )
    registry: OperationRegistry = request.app.state.operations
    level: Level = "type" if resource_id is None else "instance"
    operation = registry.find(resource_type, params["operation"], level)
    settings: Settings = request.app.state.settings
    body = await _parameters(request, settings.max_body_bytes)
    query = list(request.query_params.multi_items())
    call = OperationCall(
        resource_type=resource_type,
        resource_id=resource_id,
        arguments=parse_arguments(
            operation.parameters, query, body, strict=strict_handling(request)
        ),
        cursor=request.query_params.get("_cursor"),
        page_size=PageSize(settings.default_page_size, settings.max_page_size),
    )
    result = await operation.handler(OperationServices(service, request.app.state.search), call)
    path = f"/{resource_type}" + (f"/{resource_id}" if resource_id else "")
    read = [] if isinstance(result, ResourceAnswer) else [*result.matches, *result.included]
    await audit_read(
        request, "operation", read, query=f"{path}/${operation.code}?{urlencode(query)}"
    )
    if isinstance(result, ResourceAnswer):
        return json_response(result.resource, 200, media, pretty=is_pretty(request))
    kept = [(name, value) for name, value in query if name in KEPT_IN_LINKS]
    bundle = _searchset(request, result, f"{path}/${operation.code}", call.cursor, kept)
    return json_response(bundle, 200, media, pretty=is_pretty(request))


async def _parameters(request: Request, max_bytes: int) -> Any:
    """The POSTed ``Parameters`` (None for GET or an empty body)."""
    if request.method != "POST":
        return None
    require_json_body(request)
    try:
        return await read_json(request, max_bytes)
    except BadRequest as error:
        if error.rofecare_code == "rofecare-1505":  # no body: no arguments
            return None
        raise


def _searchset(
    request: Request,
    result: Searchset,
    path: str,
    cursor: str | None,
    kept: list[tuple[str, str]],
) -> bytes:
    """A searchset Bundle (search.html#bundle): matches, includes, then an outcome entry
    listing the parameters ignored."""
    base = base_url(request)

    def link(relation: str, page: str | None) -> dict[str, str]:
        pairs = [*result.link_parameters, *kept, *([("_cursor", page)] if page else [])]
        query = urlencode(pairs)
        return {"relation": relation, "url": f"{base}{path}" + (f"?{query}" if query else "")}

    links = [link("self", cursor)]
    if result.next_cursor:
        links.append(link("next", result.next_cursor))
    entries = [_entry(base, version, "match") for version in result.matches]
    entries += [_entry(base, version, "include") for version in result.included]
    return searchset_json(entries, result.issues, result.total, links)


def _entry(base: str, version: StoredVersion, mode: str) -> dict[str, Any]:
    assert version.body is not None
    return {
        "fullUrl": f"{base}/{version.resource_type}/{version.resource_id}",
        "resource": orjson.Fragment(version.body),
        "search": {"mode": mode},
    }
