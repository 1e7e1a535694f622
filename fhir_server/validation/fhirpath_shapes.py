"""FHIRPath expressions of one shape common in profiles, evaluated directly in Python.

Why: which Rofecare profiles govern a resource is decided by each profile's applies-to
expression, on every write of its type, and all of them have one shape: "the resource
carries this coding", ``category.coding.where(system = 'S' and code = 'C').exists()``.
fhirpathpy took ~100 µs a resource to answer it (two profiles for each Observation, two for
each ServiceRequest, four for each Basic): a tenth of the CPU of loading Synthea with the
profiles checked. Walking the path and comparing the codings gives the same answer in a
microsecond or two.

The same answer: FHIRPath's ``where`` keeps a coding only when both comparisons are true (a
coding without a system gives an empty comparison, and is dropped), and ``exists`` is true
when one is kept. Only a path of plain elements of the profile's type is walked so
(checked against the R4 element types when the profile is compiled): through a choice-type
element (``value`` for ``valueCodeableConcept``) fhirpathpy answers.
``tests/unit/validation/test_fhirpath_shapes.py`` compares both on Synthea resources and on
variants made to differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhir_server.definitions.registry import load_element_types

FhirPathFunction = Callable[..., list[Any]]

_HAS_CODING = re.compile(
    r"(?P<path>[a-z][A-Za-z0-9]*(?:\.[a-z][A-Za-z0-9]*)*)\.coding"
    r"\.where\(system = '(?P<system>[^'\\]*)' and code = '(?P<code>[^'\\]*)'\)\.exists\(\)"
)


def direct(expression: str, resource_type: str) -> FhirPathFunction | None:
    """A direct evaluator of ``expression``, evaluated on ``resource_type`` resources, when
    it has the shape above and its path names plain elements of that type, ending at a
    CodeableConcept; None otherwise (fhirpathpy answers)."""
    found = _HAS_CODING.fullmatch(expression)
    if found is None:
        return None
    steps = tuple(found["path"].split("."))
    if _element_type(resource_type, steps) != "CodeableConcept":
        return None
    return _has_coding(steps, found["system"], found["code"])


def _element_type(resource_type: str, steps: tuple[str, ...]) -> str | None:
    """The type ``steps`` lead to from ``resource_type`` (element-types.json, as the
    profile compiler reads it); None through a choice-type element (``value[x]``: the walk
    would have to know the suffixes), an element R4 does not define (the walk would find
    what fhirpathpy ignores) or one typed elsewhere (``@Observation.referenceRange``)."""
    types = load_element_types()
    owner, prefix = resource_type, ""
    for step in steps:
        kinds = types.get(owner, {}).get(prefix + step)
        if kinds is None or len(kinds) != 1 or kinds[0].startswith("@"):
            return None
        if kinds[0] in ("BackboneElement", "Element"):
            prefix += step + "."  # its children are named under its path
        else:
            owner, prefix = kinds[0], ""
    return owner if not prefix else None


def _has_coding(steps: tuple[str, ...], system: str, code: str) -> FhirPathFunction:
    def evaluate(root: Any, context: Any = None) -> list[Any]:
        nodes = root if isinstance(root, list) else [root]
        for step in steps:
            found: list[Any] = []
            for node in nodes:
                value = node.get(step) if isinstance(node, dict) else None
                if isinstance(value, list):
                    found.extend(value)
                elif value is not None:
                    found.append(value)
            nodes = found
        for concept in nodes:
            codings = concept.get("coding") if isinstance(concept, dict) else None
            for coding in codings if isinstance(codings, list) else ():
                if (
                    isinstance(coding, dict)
                    and coding.get("system") == system
                    and coding.get("code") == code
                ):
                    return [True]
        return [False]

    return evaluate
