"""``$validate`` (https://hl7.org/fhir/R4/resource-operation-validate.html).

Runs exactly the checks a create, update or delete would run (structure, profiles, then
the hospital's rules, against the data as it is now), and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_server.auth import policy
from fhir_server.errors import BadRequest, FhirError, Issue
from fhir_server.model.outcome import information, operation_outcome
from fhir_server.services.content import without_server_meta
from fhir_server.services.resources import ResourceService
from fhir_server.storage.base import Method

MODES = ("create", "update", "delete")
BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"


async def run_validate(
    service: ResourceService,
    resource_type: str,
    resource_id: str | None,
    body: Any,
    query: Mapping[str, str],
) -> dict[str, Any]:
    service.check_type(resource_type)
    resource, mode, profile = _arguments(body, query)
    # $validate writes nothing, but tells whether a write would pass (and, for update and
    # delete, reads the current version): it needs the scope of the write it tries.
    needed: policy.Interaction = (
        "update" if mode == "update" else "delete" if mode == "delete" else "create"
    )
    policy.require(resource_type, needed)
    issues: list[Issue] = []
    asked: tuple[str, ...] = ()
    if profile is not None and profile != BASE_PROFILE + resource_type:
        await service.refresh_profiles()
        known = service.profiles.registry.get(profile) if service.profiles else None
        if known is None:
            issues.append(
                Issue("error", "not-supported", f"Unknown profile {profile!r}", "rofecare-1701")
            )
        else:
            asked = (profile,)
    if mode in ("update", "delete") and resource_id is None:
        raise BadRequest(
            f"mode={mode} needs the instance URL [type]/[id]/$validate",
            rofecare_code="rofecare-1702",
        )
    if mode == "delete":
        assert resource_id is not None
        issues += await _read_issues(service, resource_type, resource_id)
    else:
        if resource is None:
            raise BadRequest("$validate needs a resource", rofecare_code="rofecare-1703")
        issues += await service.validation_issues(
            without_server_meta(resource), resource_type, asked
        )
        if mode == "update" and isinstance(resource, dict) and resource.get("id") != resource_id:
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    "An update must carry the URL's id in the body",
                    "rofecare-1203",
                    (f"{resource_type}.id",),
                )
            )
    if not any(issue.severity in ("error", "fatal") for issue in issues):
        issues += await _rule_issues(service, resource_type, resource_id, resource, mode)
    if not issues:
        return information("The resource is valid", "rofecare-1700")
    return operation_outcome(issues)


def _arguments(body: Any, query: Mapping[str, str]) -> tuple[Any, str | None, str | None]:
    """(resource, mode, profile) from a Parameters body or a bare resource plus the URL."""
    mode = query.get("mode")
    profile = query.get("profile")
    resource = body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = None
        parameters = body.get("parameter") or []
        if not isinstance(parameters, list):
            raise BadRequest("Parameters.parameter must be an array", rofecare_code="rofecare-1705")
        for parameter in parameters:
            if not isinstance(parameter, dict):
                continue
            name = parameter.get("name")
            if name == "resource":
                resource = parameter.get("resource")
            elif name == "mode":
                mode = parameter.get("valueCode") or parameter.get("valueString")
            elif name == "profile":
                profile = parameter.get("valueCanonical") or parameter.get("valueUri")
    if mode is not None and mode not in MODES:
        raise BadRequest(
            f"mode={mode!r} is not one of {', '.join(MODES)}", rofecare_code="rofecare-1704"
        )
    return resource, mode, profile


async def _read_issues(
    service: ResourceService, resource_type: str, resource_id: str
) -> list[Issue]:
    try:
        await service.read(resource_type, resource_id)
    except FhirError as error:
        return error.issues
    return []


async def _rule_issues(
    service: ResourceService,
    resource_type: str,
    resource_id: str | None,
    resource: Any,
    mode: str | None,
) -> list[Issue]:
    """What the hospital's rules would say of this create, update or delete: they run as
    for a write, against the data as it is now, and nothing is written."""
    current = None
    if mode in ("update", "delete") and resource_id is not None:
        current = await service.current(resource_type, resource_id)
    if mode == "delete" and (current is None or current.deleted):
        return []
    method: Method = "DELETE" if mode == "delete" else "PUT" if current else "POST"
    content = None
    if mode != "delete" and isinstance(resource, dict):
        content = {**resource, "id": resource_id or resource.get("id") or ""}
    try:
        verdict = await service.judge(resource_type, resource_id or "", content, current, method)
    except FhirError as refusal:
        return refusal.issues
    return verdict.warnings  # in warn mode, the refusals
