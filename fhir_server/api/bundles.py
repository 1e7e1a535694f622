"""``POST [base]`` with a transaction or batch Bundle (https://hl7.org/fhir/R4/http.html#transaction).

The answer is a ``transaction-response`` or ``batch-response`` Bundle with one entry per
request entry, in the request's order: ``response.status``, ``location``, ``etag`` and
``lastModified`` for writes; the resource itself for reads, and for writes when the client
sends ``Prefer: return=representation`` (the default here is minimal, since echoing back
every resource of a large load doubles the traffic for nothing); ``response.outcome`` for
a batch entry that failed, for a write accepted with warnings (a profile's guidance; in
``ROFECARE_PROFILE_VALIDATION=warn`` the rules it breaks) and for ``Prefer:
return=OperationOutcome``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from uuid import uuid4

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.audit import audit_read
from fhir_server.api.body import read_json
from fhir_server.api.negotiation import is_pretty, require_json_body, response_media_type
from fhir_server.api.rendering import base_url, json_response, preferred_return, written
from fhir_server.api.search import searchset_bundle
from fhir_server.auth.context import current_access
from fhir_server.config import Settings
from fhir_server.model.ids import weak_etag
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.model.outcome import operation_outcome
from fhir_server.services.bundles import BundleOutcome, BundleService, EntryOutcome
from fhir_server.storage.base import StoredVersion


async def transaction_or_batch(request: Request) -> Response:
    media = response_media_type(request)
    require_json_body(request)
    settings: Settings = request.app.state.settings
    body = await read_json(request, settings.max_bundle_bytes)
    service: BundleService = request.app.state.bundles
    base = base_url(request)
    outcome = await service.process(body, base_url=base)
    await _audit_entries(request, outcome)
    prefer = preferred_return(request, default="minimal")
    entries = [_entry(request, base, item, prefer) for item in outcome.entries]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid4()),
        "meta": {"lastUpdated": to_instant(now_utc())},
        "type": f"{outcome.kind}-response",
        "entry": entries,
    }
    return json_response(orjson.dumps(bundle), 200, media, pretty=is_pretty(request))


def _entry(request: Request, base: str, item: EntryOutcome, prefer: str) -> dict[str, Any]:
    response: dict[str, Any] = {"status": _status(item.status)}
    entry: dict[str, Any] = {}
    if item.error is not None:
        response["outcome"] = operation_outcome(item.error.issues)
    elif item.write is not None:
        version = item.write.version
        entry["fullUrl"] = f"{base}/{version.resource_type}/{version.resource_id}"
        _describe(response, version)
        if prefer == "representation" and version.body is not None:
            entry["resource"] = orjson.Fragment(version.body)
        issues = list(item.write.warnings)
        if prefer == "OperationOutcome":
            issues.insert(0, written(version))
        if issues:
            response["outcome"] = operation_outcome(issues)
    elif item.read is not None:
        version = item.read
        entry["fullUrl"] = f"{base}/{version.resource_type}/{version.resource_id}"
        _describe(response, version)
        if version.body is not None:
            entry["resource"] = orjson.Fragment(version.body)
    elif item.search is not None:
        entry["resource"] = orjson.Fragment(
            searchset_bundle(request, item.search, item.search_pairs, item.search_path)
        )
    entry["response"] = response
    return entry


def _describe(response: dict[str, Any], version: StoredVersion) -> None:
    response["location"] = (
        f"{version.resource_type}/{version.resource_id}/_history/{version.version_id}"
    )
    response["etag"] = weak_etag(version.version_id)
    response["lastModified"] = to_instant(version.last_updated)


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


async def _audit_entries(request: Request, outcome: BundleOutcome) -> None:
    """What the Bundle's entries read (GET entries, searches, the match a conditional
    create answered with) and what they were refused: the entries' writes audit themselves
    in the service, but a batch answers a refusal inside its response, not as a 403."""
    returned: list[StoredVersion] = []
    for item in outcome.entries:
        if item.read is not None:
            returned.append(item.read)
        if item.search is not None:
            returned += [*item.search.page.matches, *item.search.page.included]
        if item.write is not None and not item.write.changed:
            returned.append(item.write.version)
    if returned:
        await audit_read(request, outcome.kind, returned)
    authenticator = request.app.state.authenticator
    if authenticator is None:
        return
    for item in outcome.entries:
        if item.error is not None and item.error.status in (401, 403):
            await authenticator.audit_denial(request, current_access(), item.error)
