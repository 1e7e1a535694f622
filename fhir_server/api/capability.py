"""The CapabilityStatement (https://hl7.org/fhir/R4/capabilitystatement.html).

Generated from what this build implements and how it is configured, so it never claims an
interaction, format or parameter that the server does not honour.
"""

from __future__ import annotations

from typing import Any

from fhir_server import FHIR_VERSION, __version__
from fhir_server.config import Settings
from fhir_server.definitions import Definitions
from fhir_server.services.resources import NOT_STORED

INSTANCE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance")
TYPE_INTERACTIONS = ("history-type", "create")
VALIDATE = "http://hl7.org/fhir/OperationDefinition/Resource-validate"


def capability_statement(settings: Settings, definitions: Definitions, date: str) -> dict[str, Any]:
    resources = [
        {
            "type": name,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{name}",
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
            "operation": [{"name": "validate", "definition": VALIDATE}],
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
                    "Conditional create, update and delete accept _id and identifier criteria."
                ),
                "resource": resources,
                "interaction": [{"code": "history-system"}],
            }
        ],
    }
    if settings.public_base_url:
        statement["implementation"]["url"] = settings.public_base_url
    return statement
