"""Search endpoints: type, system and compartment level, by GET or POST ``_search``.

https://hl7.org/fhir/R4/http.html#search: ``POST [base]/[type]/_search`` carries the
parameters form-encoded in the body (and possibly also in the URL), so that they stay out
of logs and proxies; the answer is the same searchset Bundle as for GET. Paging links are
always GET URLs on the FHIR base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode
from uuid import uuid4

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.audit import audit_read
from fhir_server.api.negotiation import is_pretty, response_media_type
from fhir_server.api.rendering import base_url, json_response
from fhir_server.definitions import Definitions
from fhir_server.errors import BadRequest, Issue, PayloadTooLarge, UnsupportedMediaType
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.model.outcome import issue_json
from fhir_server.model.subset import select_elements, summarize
from fhir_server.services.search import SearchResult, SearchService
from fhir_server.storage.base import StoredVersion

MAX_FORM_BYTES = 1024 * 1024
FORM = "application/x-www-form-urlencoded"


def _search_service(request: Request) -> SearchService:
    service: SearchService = request.app.state.search
    return service


def strict_handling(request: Request) -> bool:
    """``Prefer: handling=strict`` (search.html#errors); lenient is the default."""
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "handling":
            return value.strip().strip('"').lower() == "strict"
    return False


async def search_parameters(request: Request) -> list[tuple[str, str]]:
    """The query string's parameters, plus the form body's for POST ``_search``."""
    pairs = list(request.query_params.multi_items())
    if request.method != "POST":
        return pairs
    media = request.headers.get("content-type", FORM).split(";")[0].strip().lower()
    if media != FORM:
        raise UnsupportedMediaType(
            f"POST _search takes {FORM}, not {media[:60]!r}", rofecare_code="rofecare-1503"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(
                f"Search forms are limited to {MAX_FORM_BYTES} bytes",
                rofecare_code="rofecare-1507",
            )
    try:
        pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as error:
        raise BadRequest("The search form is not UTF-8", rofecare_code="rofecare-1400") from error
    return pairs


async def type_search(request: Request) -> Response:
    media = response_media_type(request)
    resource_type = request.path_params["resource_type"]
    pairs = await search_parameters(request)
    result = await _search_service(request).search(
        (resource_type,), pairs, strict=strict_handling(request), base_url=base_url(request)
    )
    return await _answer(request, result, pairs, f"/{resource_type}", media)


async def system_search(request: Request) -> Response:
    media = response_media_type(request)
    pairs = await search_parameters(request)
    service = _search_service(request)
    result = await service.search(
        service.system_types(pairs),
        pairs,
        strict=strict_handling(request),
        base_url=base_url(request),
    )
    return await _answer(request, result, pairs, "", media)


async def compartment_search(request: Request) -> Response:
    media = response_media_type(request)
    params = request.path_params
    pairs = await search_parameters(request)
    target = params.get("target_type")
    result = await _search_service(request).compartment(
        params["resource_type"],
        params["resource_id"],
        None if target in (None, "*") else target,
        pairs,
        strict=strict_handling(request),
        base_url=base_url(request),
    )
    path = f"/{params['resource_type']}/{params['resource_id']}/{target or '*'}"
    return await _answer(request, result, pairs, path, media)


async def _answer(
    request: Request,
    result: SearchResult,
    pairs: list[tuple[str, str]],
    path: str,
    media: str,
) -> Response:
    interaction = "search-system" if path in ("", "/") else "search-type"
    returned = [*result.page.matches, *result.page.included]
    await audit_read(request, interaction, returned, query=f"{path}?{urlencode(pairs)}")
    body = searchset_bundle(request, result, pairs, path)
    return json_response(body, 200, media, pretty=is_pretty(request))


def searchset_bundle(
    request: Request, result: SearchResult, pairs: list[tuple[str, str]], path: str
) -> bytes:
    """A searchset Bundle (search.html#bundle): matches, then includes, then an outcome entry
    listing ignored parameters; ``self``/``next``/``previous`` links as GET URLs."""
    base = base_url(request)
    kept = [(name, value) for name, value in pairs if name != "_cursor"]
    page = result.page

    def link(relation: str, cursor: str | None) -> dict[str, str]:
        query = urlencode([*kept, ("_cursor", cursor)] if cursor else kept)
        return {"relation": relation, "url": f"{base}{path}" + (f"?{query}" if query else "")}

    links = [link("self", result.parsed.plan.cursor)]
    if page.next_cursor:
        links.append(link("next", page.next_cursor))
    if page.previous_cursor:
        links.append(link("previous", page.previous_cursor))
    definitions: Definitions = request.app.state.definitions
    entries = [_entry(base, version, "match", result, definitions) for version in page.matches]
    entries += [_entry(base, version, "include", result, definitions) for version in page.included]
    return searchset_json(entries, result.parsed.ignored, page.total, links)


def searchset_json(
    entries: list[dict[str, Any]],
    ignored: Sequence[Issue],
    total: int | None,
    links: list[dict[str, str]],
) -> bytes:
    """The searchset envelope shared by search and searchset-returning operations: the
    entries, then an outcome entry listing what was ignored, the total when known."""
    if ignored:
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [issue_json(issue) for issue in ignored],
        }
        entries = [*entries, {"resource": outcome, "search": {"mode": "outcome"}}]
    bundle: dict[str, object] = {
        "resourceType": "Bundle",
        "id": str(uuid4()),
        "meta": {"lastUpdated": to_instant(now_utc())},
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)


def _entry(
    base: str,
    version: StoredVersion,
    mode: str,
    result: SearchResult,
    definitions: Definitions,
) -> dict[str, object]:
    assert version.body is not None
    summary, elements = result.parsed.summary, result.parsed.elements
    resource: object = orjson.Fragment(version.body)
    if summary not in (None, "false") or elements:
        parsed = orjson.loads(version.body)
        sets = definitions.elements.get(version.resource_type)
        if summary not in (None, "false"):
            resource = summarize(parsed, summary, sets)
        elif elements:
            resource = select_elements(parsed, elements, sets)
    return {
        "fullUrl": f"{base}/{version.resource_type}/{version.resource_id}",
        "resource": resource,
        "search": {"mode": mode},
    }
