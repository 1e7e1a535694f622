"""The direct evaluator of ``path.coding.where(system = 'S' and code = 'C').exists()``
(fhir_server/validation/fhirpath_shapes.py) answers as fhirpathpy does."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from fhir_server.definitions.registry import profile_resources
from fhir_server.validation.fhirpath_shapes import direct
from fhir_server.validation.profile_registry import ProfileRegistry

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
PROFILES = Path(__file__).resolve().parents[3] / "profiles"
LAB = "http://terminology.hl7.org/CodeSystem/observation-category"


def applies_to_expressions() -> list[tuple[str, str]]:
    """Every applies-to expression of the packaged profiles, with the profile's type."""
    found = []
    for path in sorted(PROFILES.glob("*/*.json")):
        definition = json.loads(path.read_text())
        for extension in definition.get("extension", []):
            if extension.get("url", "").endswith("applies-to"):
                found.append((definition["type"], extension["valueString"]))
    return found


SNOMED = "http://snomed.info/sct"
CVX = "http://hl7.org/fhir/sid/cvx"
EXPRESSIONS = [
    *applies_to_expressions(),
    ("Observation", f"category.coding.where(system = '{LAB}' and code = 'vital-signs').exists()"),
    ("Observation", "code.coding.where(system = 'http://loinc.org' and code = '8867-4').exists()"),
    ("Encounter", f"type.coding.where(system = '{SNOMED}' and code = '185345009').exists()"),
    ("Encounter", f"reasonCode.coding.where(system = '{SNOMED}' and code = '72892002').exists()"),
    ("Observation", f"component.code.coding.where(system = '{LAB}' and code = 'x').exists()"),
    ("Immunization", f"vaccineCode.coding.where(system = '{CVX}' and code = '140').exists()"),
]


def synthea_resources() -> Iterator[dict[str, Any]]:
    for path in sorted((SHARED / "synthea" / "selfcontained").glob("*.json"))[:5]:
        bundle = json.loads(path.read_text())
        for entry in bundle.get("entry", []) if isinstance(bundle, dict) else []:
            if isinstance(entry.get("resource"), dict):
                yield entry["resource"]


def variants() -> Iterator[dict[str, Any]]:
    """Resources made to sit on every edge of the shape."""
    coding = {"system": LAB, "code": "laboratory"}
    yield {"resourceType": "Observation", "category": [{"coding": [coding]}]}
    yield {"resourceType": "Observation", "category": {"coding": [coding]}}  # one, not a list
    yield {"resourceType": "Observation", "category": [{"coding": [{"code": "laboratory"}]}]}
    yield {"resourceType": "Observation", "category": [{"coding": [{"system": LAB}]}]}
    yield {"resourceType": "Observation", "category": [{"text": "lab"}, {"coding": []}]}
    yield {"resourceType": "Observation", "category": [{"coding": [{**coding, "code": "Lab"}]}]}
    yield {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": LAB, "code": "x"}]}, {"coding": [coding]}],
    }
    yield {"resourceType": "Observation", "category": []}
    yield {"resourceType": "Observation"}
    yield {
        "resourceType": "Observation",
        "valueCodeableConcept": {
            "coding": [{"system": "http://snomed.info/sct", "code": "260385009"}]
        },
    }
    kind = {"system": "http://rofecare.com/fhir/CodeSystem/basic-kind", "code": "stock-item"}
    yield {"resourceType": "Basic", "code": {"coding": [kind]}}


def carrying(expression: str) -> Iterator[dict[str, Any]]:
    """Resources holding the expression's coding at its path, as a list and as one
    element, and near misses (another system, the code in another case)."""
    path, rest = expression.split(".coding.where(system = '", 1)
    system, rest = rest.split("' and code = '", 1)
    code = rest.split("'", 1)[0]
    steps = path.split(".")
    for coding in (
        {"system": system, "code": code},
        {"system": system + "x", "code": code},
        {"system": system, "code": code.upper() + "x"},
    ):
        for as_list in (True, False):
            node: Any = {"coding": [{"system": "http://other", "code": code}, coding]}
            for step in reversed(steps):
                node = {step: [node] if as_list else node}
            yield {"resourceType": "Observation", **node}


@pytest.mark.parametrize(("resource_type", "expression"), EXPRESSIONS)
def test_the_direct_answer_is_fhirpathpy_s(resource_type: str, expression: str) -> None:
    general = fhirpath_compile(expression, models["r4"])
    fast = direct(expression, resource_type)
    assert fast is not None, "the shape is recognised"
    checked = matched = 0
    for resource in [*synthea_resources(), *variants(), *carrying(expression)]:
        expected = general(copy.deepcopy(resource), None)
        assert fast(resource, None) == expected, (expression, resource)
        checked += 1
        matched += expected == [True]
    assert checked > 1000
    assert matched > 0  # each expression is true of some resource (a variant at least)


def test_the_profiles_use_it_and_other_shapes_keep_fhirpathpy() -> None:
    registry = ProfileRegistry(profile_resources("StructureDefinition"))
    governed = [p for p in registry.packaged if p.applies_to is not None]
    assert len(governed) == len(applies_to_expressions()) > 0
    assert all(p.applies_to.__module__ == direct.__module__ for p in governed)  # type: ignore[union-attr]
    for resource_type, other in (
        ("Observation", "code.coding.where(system = 'a' or code = 'b').exists()"),
        ("Observation", "Observation.category.coding.where(system = 'a' and code = 'b').exists()"),
        ("Observation", "category.coding.where(system = 'a' and code = 'b').empty()"),
        ("Observation", "category.coding.where(code = 'b' and system = 'a').exists()"),
        # a choice-type element (valueCodeableConcept...), an element R4 does not define,
        # a path that does not end at a CodeableConcept: fhirpathpy answers
        ("Observation", "value.coding.where(system = 'a' and code = 'b').exists()"),
        ("Observation", "kind.coding.where(system = 'a' and code = 'b').exists()"),
        ("Observation", "subject.coding.where(system = 'a' and code = 'b').exists()"),
    ):
        assert direct(other, resource_type) is None, other
