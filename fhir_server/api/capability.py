"""The CapabilityStatement (https://hl7.org/fhir/R4/capabilitystatement.html).

Generated from what this build implements and how it is configured, so it never claims an
interaction, format or parameter that the server does not honour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fhir_server import FHIR_VERSION, __version__
from fhir_server.config import Settings
from fhir_server.definitions import Definitions
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.services.operations import OperationRegistry
from fhir_server.services.resources import NOT_STORED

INSTANCE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance")
TYPE_INTERACTIONS = ("history-type", "create", "search-type")
COMMON_PARAMETERS = (
    ("_id", "token"),
    ("_lastUpdated", "date"),
    ("_text", "string"),
    ("_content", "string"),
)
VALIDATE = "http://hl7.org/fhir/OperationDefinition/Resource-validate"


def capability_statement(
    settings: Settings,
    definitions: Definitions,
    registry: SearchParameterRegistry,
    date: str,
    operations: OperationRegistry | None = None,
    supported_profiles: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """``supported_profiles``: resource type -> the Rofecare profiles in force for it
    (rest.resource.supportedProfile), so a client knows what its writes are held to."""
    profiles = supported_profiles or {}
    resources = [
        {
            "type": name,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{name}",
            **({"supportedProfile": list(profiles[name])} if profiles.get(name) else {}),
            "interaction": [
                {"code": code} for code in (*INSTANCE_INTERACTIONS, *TYPE_INTERACTIONS)
            ],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": settings.allow_client_ids,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "operation": [
                {"name": "validate", "definition": VALIDATE},
                *(
                    {"name": operation.code, "definition": operation.url}
                    for operation in (operations.for_type(name) if operations else ())
                ),
            ],
            **_search(name, registry),
        }
        for name in sorted(definitions.resource_types - NOT_STORED)
    ]
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "Rofecare",
        "kind": "instance",
        "software": {"name": "Rofecare", "version": __version__},
        "implementation": {"description": "Rofecare FHIR R4 server"},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Search (GET, and POST _search) supports every R4 search parameter with "
                    "modifiers, prefixes, chaining, _has, _include/_revinclude (:iterate), "
                    "_sort, _count, _total, _summary and _elements; conditional create, "
                    "update and delete accept any search criteria."
                ),
                "resource": resources,
                "interaction": [{"code": "history-system"}, {"code": "search-system"}],
                "searchParam": [{"name": name, "type": kind} for name, kind in COMMON_PARAMETERS],
            }
        ],
    }
    if settings.public_base_url:
        statement["implementation"]["url"] = settings.public_base_url
    if settings.auth_enabled:
        statement["rest"][0]["security"] = _security(settings)
    return statement


def _security(settings: Settings) -> dict[str, Any]:
    """SMART on FHIR is announced here (https://hl7.org/fhir/smart-app-launch/conformance.html);
    the endpoints themselves are in ``.well-known/smart-configuration``, and also in the
    older oauth-uris extension when the public base URL is configured (they must be
    absolute, and this statement is built once, before any request names a host)."""
    security: dict[str, Any] = {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see .well-known/smart-configuration)",
            }
        ],
        "description": "Every interaction but this statement needs a bearer access token.",
    }
    if settings.public_base_url:
        base = settings.public_base_url.rstrip("/")
        root = base.removesuffix(settings.base_path) if base.endswith(settings.base_path) else base
        uris = [("authorize", "authorize"), ("token", "token"), ("revoke", "revoke")]
        uris.append(("introspect", "introspect"))
        security["extension"] = [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": name, "valueUri": f"{root}/oauth/{path}"} for name, path in uris
                ],
            }
        ]
    return security


def _search(resource_type: str, registry: SearchParameterRegistry) -> dict[str, Any]:
    parameters = registry.for_type(resource_type)
    usable = [
        parameter
        for parameter in parameters.values()
        if parameter.indexed and parameter.code not in ("_id", "_lastUpdated")
    ]
    references = sorted(p.code for p in usable if p.type == "reference")
    entry: dict[str, Any] = {
        "searchInclude": ["*", *(f"{resource_type}:{code}" for code in references)],
        "searchRevInclude": ["*"],
        "searchParam": [
            *({"name": name, "type": kind} for name, kind in COMMON_PARAMETERS),
            *(
                {"name": p.code, "type": p.type, **({"definition": p.url} if p.url else {})}
                for p in sorted(usable, key=lambda p: p.code)
            ),
        ],
    }
    return entry
