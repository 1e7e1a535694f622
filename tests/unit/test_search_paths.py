"""Compiled search expressions agree with a general FHIRPath engine (fhirpathpy, R4 model).

Every R4 search expression the fast path compiles (except those using ``resolve()``,
which fhirpathpy lacks) is evaluated both ways on real Synthea resources.
"""

from __future__ import annotations

import collections
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from fhir_server.definitions.registry import load_element_types
from fhir_server.search.paths import compile_expression

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SEARCH_PARAMETERS = SHARED / "fhir-r4" / "search-parameters.json"
BUNDLES = sorted((SHARED / "synthea" / "selfcontained").glob("*.json"))[:3]

pytestmark = pytest.mark.skipif(not BUNDLES, reason="../shared/data is not beside the repo")


def _normal(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, default=lambda o: float(o) if isinstance(o, Decimal) else str(o)
    )


def _resources_by_type() -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for bundle in BUNDLES:
        for entry in json.loads(bundle.read_text())["entry"]:
            by_type[entry["resource"]["resourceType"]].append(entry["resource"])
    return by_type


def test_compiled_expressions_match_fhirpathpy() -> None:
    element_types = load_element_types()
    parameters = [
        entry["resource"]
        for entry in json.loads(SEARCH_PARAMETERS.read_text())["entry"]
        if entry["resource"].get("expression")
    ]
    by_type = _resources_by_type()
    compared = 0
    mismatches = []
    for parameter in parameters:
        expression = parameter["expression"]
        fast = compile_expression(expression, element_types)
        if fast is None or "resolve()" in expression:
            continue
        general = fhirpath_compile(expression, models["r4"])
        for resource_type in parameter["base"]:
            for resource in by_type.get(resource_type, [])[:25]:
                try:
                    theirs = sorted(_normal(value) for value in general(resource))
                except ValueError:
                    # Strict FHIRPath refuses ``as`` on a collection (component.value as
                    # Quantity); search indexing applies it to each item, as servers do.
                    continue
                mine = sorted(_normal(value.value) for value in fast.evaluate(resource))
                compared += 1
                if mine != theirs:
                    mismatches.append((parameter["id"], resource["id"], mine[:2], theirs[:2]))
    assert compared > 2000
    assert mismatches == []


def test_coverage_of_the_r4_expressions() -> None:
    element_types = load_element_types()
    expressions = [
        entry["resource"]["expression"]
        for entry in json.loads(SEARCH_PARAMETERS.read_text())["entry"]
        if entry["resource"].get("expression")
    ]
    compiled = [e for e in expressions if compile_expression(e, element_types) is not None]
    assert len(compiled) / len(expressions) > 0.95


@pytest.mark.parametrize(
    ("expression", "resource", "expected"),
    [
        (
            "Observation.subject.where(resolve() is Patient)",
            {"resourceType": "Observation", "subject": {"reference": "Patient/1"}},
            [{"reference": "Patient/1"}],
        ),
        (
            "Observation.subject.where(resolve() is Patient)",
            {"resourceType": "Observation", "subject": {"reference": "Group/1"}},
            [],
        ),
        (
            "Observation.subject.where(resolve() is Patient)",
            {"resourceType": "Observation", "subject": {"reference": "http://x/fhir/Patient/1"}},
            [{"reference": "http://x/fhir/Patient/1"}],
        ),
        (
            "Patient.telecom.where(system='email')",
            {
                "resourceType": "Patient",
                "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "e"}],
            },
            [{"system": "email", "value": "e"}],
        ),
        (
            "Condition.onset.as(Age)",
            {"resourceType": "Condition", "onsetAge": {"value": 3}, "subject": {}},
            [{"value": 3}],
        ),
        (
            "Condition.onset.as(dateTime)",
            {"resourceType": "Condition", "onsetAge": {"value": 3}, "subject": {}},
            [],
        ),
        (
            "Resource.meta.tag",
            {"resourceType": "Encounter", "meta": {"tag": [{"code": "x"}]}},
            [{"code": "x"}],
        ),
        (
            "Bundle.entry[0].resource",
            {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}, {}]},
            [{"resourceType": "Patient"}],
        ),
    ],
)
def test_filters(expression: str, resource: dict[str, Any], expected: list[Any]) -> None:
    compiled = compile_expression(expression, load_element_types())
    assert compiled is not None
    assert [value.value for value in compiled.evaluate(resource)] == expected


def test_values_carry_their_types() -> None:
    compiled = compile_expression("Observation.value | Observation.effective", load_element_types())
    assert compiled is not None
    observation = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 1},
        "effectiveDateTime": "2024-01-01",
    }
    assert [value.type for value in compiled.evaluate(observation)] == ["Quantity", "dateTime"]
