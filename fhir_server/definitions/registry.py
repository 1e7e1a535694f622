"""Loads the R4 definitions shipped in ``data/`` (see data/SOURCE.md for their provenance)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from fhir_server.model.subset import ElementSets

DATA_DIR = Path(str(resources.files("fhir_server.definitions") / "data"))


@dataclass(frozen=True)
class Definitions:
    resource_types: frozenset[str]
    schema_path: Path
    elements: dict[str, ElementSets]

    def is_resource_type(self, name: str) -> bool:
        return name in self.resource_types


@functools.cache
def load_definitions() -> Definitions:
    types = json.loads((DATA_DIR / "resource-types.json").read_text())
    return Definitions(
        resource_types=frozenset(types),
        schema_path=DATA_DIR / "fhir.schema.json",
        elements=_load_element_sets(),
    )


@functools.cache
def load_element_types() -> dict[str, dict[str, list[str]]]:
    """Element path -> type codes, per resource type and complex datatype (element-types.json)."""
    types: dict[str, dict[str, list[str]]] = json.loads(
        (DATA_DIR / "element-types.json").read_text()
    )
    return types


@functools.cache
def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((DATA_DIR / "fhir.schema.json").read_text())
    return schema


def _load_element_sets() -> dict[str, ElementSets]:
    path = DATA_DIR / "summary-elements.json"
    if not path.exists():
        return {}
    raw: dict[str, dict[str, list[str]]] = json.loads(path.read_text())
    return {
        name: ElementSets(frozenset(sets["summary"]), frozenset(sets["mandatory"]))
        for name, sets in raw.items()
    }


@functools.cache
def load_patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type -> the parameters linking it to a Patient (types without any omitted)."""
    definition = json.loads((DATA_DIR / "compartmentdefinition-patient.json").read_text())
    return {
        item["code"]: tuple(item["param"]) for item in definition["resource"] if item.get("param")
    }


def profile_resources(resource_type: str) -> list[dict[str, Any]]:
    """Resources of ``resource_type`` shipped as JSON files under the ``profiles`` package
    (Rofecare's own SearchParameters, StructureDefinitions...), in a stable order; fresh
    copies, which callers may change."""
    return [orjson.loads(raw) for raw in _profile_files().get(resource_type, ())]


@functools.cache
def _profile_files() -> dict[str, tuple[bytes, ...]]:
    """resourceType -> the files of that type under ``profiles/``: the package is walked
    and parsed once per process, not once per type asked for (search, profiles,
    terminology and publication each ask)."""
    root = Path(str(resources.files("profiles")))
    found: dict[str, list[bytes]] = {}
    for path in sorted(root.rglob("*.json")):
        if "examples" in path.relative_to(root).parts:
            continue  # the documented valid and invalid instances, not definitions
        raw = path.read_bytes()
        content = orjson.loads(raw)
        if isinstance(content, dict) and isinstance(content.get("resourceType"), str):
            found.setdefault(content["resourceType"], []).append(raw)
    return {resource_type: tuple(files) for resource_type, files in found.items()}
