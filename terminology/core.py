"""The packaged CodeSystems and ValueSets: FHIR R4 core, and Rofecare's own in ``profiles/``.

The R4 ones are in ``data/valuesets.json.gz``; Rofecare's (triage priority, stock movement
type...) are the CodeSystem and ValueSet files of the ``profiles`` package, read through
``fhir_server.definitions.registry.profile_resources`` as the profiles are, so the bindings
of Rofecare profiles to them are checked; a Rofecare resource replaces an R4 one of the
same URL.

The file is the official ``valuesets`` Bundle (496 CodeSystems, 673 ValueSets; provenance
in ``data/SOURCE.md``). It is read once, on first use (about 110 ms: gunzip 30 ms, parse
50 ms, indexing): only what the terminology needs of each resource is kept (the
narratives, contacts and extensions are 60 % of the file and are dropped), 10 MB in
memory. The CodeSystems are indexed right away (7,394 concepts); ValueSets are compiled
when first asked for. Shipping the file gzipped (1.0 MB instead of 9.2 MB) costs the 30 ms.

R4 core ValueSets also draw on systems this Bundle does not define (SNOMED CT, LOINC, the
HL7 v3 code systems...) or defines with ``content`` ``not-present``, ``example`` or
``fragment``: those parts answer "cannot tell" (see ``valueset.py``), never "invalid".
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from fhir_server.definitions.registry import profile_resources
from terminology.codesystem import CodeSystem, from_resource

DATA_FILE = "data/valuesets.json.gz"
_KEPT = frozenset(
    {
        "resourceType",
        "id",
        "url",
        "version",
        "name",
        "title",
        "status",
        "content",
        "caseSensitive",
        "concept",
        "compose",
        "valueSet",
    }
)


@dataclass(frozen=True)
class PackagedContent:
    """The packaged CodeSystems (indexed) and ValueSet resources, each by canonical URL."""

    code_systems: Mapping[str, CodeSystem]
    value_sets: Mapping[str, Mapping[str, Any]]


def load() -> PackagedContent:
    data = resources.files("terminology").joinpath(DATA_FILE).read_bytes()
    bundle = orjson.loads(gzip.decompress(data))
    rofecare = [*profile_resources("CodeSystem"), *profile_resources("ValueSet")]
    code_systems: dict[str, CodeSystem] = {}
    value_sets: dict[str, Mapping[str, Any]] = {}
    for item in [*(entry["resource"] for entry in bundle.get("entry", [])), *rofecare]:
        resource = {key: value for key, value in item.items() if key in _KEPT}
        if not isinstance(resource.get("url"), str):
            continue
        if resource["resourceType"] == "CodeSystem":
            code_systems[resource["url"]] = from_resource(resource)
        elif resource["resourceType"] == "ValueSet":
            value_sets[resource["url"]] = resource
    return PackagedContent(code_systems, value_sets)
