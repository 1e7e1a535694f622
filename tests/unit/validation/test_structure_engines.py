"""The two structural validators agree: what jsonschema-rs accepts, jsonschema finds no fault
in, and what it refuses, jsonschema explains.

Why this matters: jsonschema-rs decides whether a write is valid, and jsonschema, on a
refusal, lists the faults. Were they to disagree, a valid resource would be refused with no
fault named, or an invalid one stored. They read the same schema, but with two regex
engines (ECMA-262 in Rust, ``re`` with ``\\Z`` anchors in Python) and two implementations of
Draft 6. The corpus: real Synthea resources, and each of them broken in the ways a client
breaks them (a wrong type, an unknown element, a value with a trailing newline, a bad code).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.definitions.registry import load_definitions
from fhir_server.validation import structure
from fhir_server.validation.structure import StructureValidator

SYNTHEA = Path(__file__).resolve().parents[4] / "shared" / "data" / "synthea"
RESOURCE_TYPES = load_definitions().resource_types


def _synthea_resources() -> list[dict[str, Any]]:
    """One resource of each type and shape found in two patients' Bundles and the
    prerequisite batches (30)."""
    chosen: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}
    files = sorted((SYNTHEA / "selfcontained").glob("*.json"))[:2]
    files += sorted((SYNTHEA / "conditional" / "prerequisites").glob("*.json"))
    for path in files:
        for entry in json.loads(path.read_text()).get("entry", []):
            resource = entry["resource"]
            chosen.setdefault((resource["resourceType"], frozenset(resource)), resource)
    return list(chosen.values())


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "resourceType":
                yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _leaves(item, (*path, index))
    else:
        yield path, node


def _set(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(resource)
    node: Any = broken
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return broken


def _broken_variants(resource: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    leaves = list(_leaves(resource))
    for path, value in rng.sample(leaves, min(4, len(leaves))):
        if isinstance(value, str):
            yield _set(resource, path, value + "\n")
            yield _set(resource, path, 12)
            yield _set(resource, path, " " + value)
            yield _set(resource, path, "")
        elif isinstance(value, bool):
            yield _set(resource, path, "true")
        elif isinstance(value, int | float):
            yield _set(resource, path, str(value))
            yield _set(resource, path, value + 0.5)
        yield _set(resource, path, None)
        yield _set(resource, path, {"value": value})
        yield _set(resource, path, [value])
        if len(path) > 1:
            yield _set(resource, path[:-1], value)  # a primitive where an object or list was
    yield {**resource, "notAnElement": 1}
    yield {**resource, "id": "has space"}
    yield {**resource, "meta": {"lastUpdated": "2020-02-30T25:00:00Z"}}
    yield {**resource, "contained": [{"resourceType": "Patient", "gender": "unknown-code"}]}
    yield {**resource, "contained": [{"resourceType": "Patient", "gender": "male"}]}


def _detailed_faults(resource: dict[str, Any]) -> list[Any]:
    validator = structure._detailed_validator(resource["resourceType"])
    return list(validator.iter_errors(resource))


@pytest.fixture(scope="module")
def fast() -> Any:
    return structure._fast_validator(RESOURCE_TYPES).is_valid


def test_the_corpus_is_real_and_varied() -> None:
    resources = _synthea_resources()
    assert len(resources) >= 25
    assert len({resource["resourceType"] for resource in resources}) >= 15


def test_both_engines_accept_every_synthea_resource(fast: Any) -> None:
    for resource in _synthea_resources():
        assert fast({resource["resourceType"]: resource}), resource["resourceType"]
        assert _detailed_faults(resource) == [], resource["resourceType"]


def test_both_engines_judge_every_broken_resource_alike(fast: Any) -> None:
    rng = random.Random(20261204)
    judged = refused = 0
    for resource in _synthea_resources():
        for broken in _broken_variants(resource, rng):
            accepted = fast({broken["resourceType"]: broken})
            faults = _detailed_faults(broken)
            assert accepted == (not faults), (broken, [fault.message for fault in faults])
            judged += 1
            refused += not accepted
    assert judged > 1_000
    assert refused > judged / 2  # the corpus tests refusals, not just acceptances


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "id": "abc\n"}, "Patient.id"),
        ({"resourceType": "Patient", "birthDate": "2020-01-01\n"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "gender": "male "}, "Patient.gender"),
        ({"resourceType": "Patient", "name": [{"family": ""}]}, "Patient.name[0].family"),
    ],
)
def test_a_trailing_newline_or_blank_is_refused_with_its_path(
    resource: dict[str, Any], expression: str
) -> None:
    issues = StructureValidator(RESOURCE_TYPES).validate(resource)
    assert [issue.expression for issue in issues] == [(expression,)]


def test_text_that_is_not_unicode_is_refused_not_raised() -> None:
    """A lone surrogate cannot come through the JSON parser, but a resource built in Python
    (an adapter's) can hold one; it is a 400-style issue, never an exception."""
    issues = StructureValidator(RESOURCE_TYPES).validate(
        {"resourceType": "Patient", "name": [{"family": "\ud800"}]}
    )
    assert [issue.rofecare_code for issue in issues] == ["rofecare-1401"]
    assert "not valid JSON" in issues[0].diagnostics


def _large_patient(names: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": f"Family{index}", "given": ["A", "B"]} for index in range(names)],
    }


def test_a_large_refused_resource_is_explained_by_the_fast_engine_with_paths() -> None:
    """jsonschema took 14.6 s to find the one wrong value at the end of an 8.7 MB Patient;
    a large resource is explained by jsonschema-rs, with the same FHIRPaths and kinds of
    message as the detailed engine gives a small one."""
    resource = _large_patient(structure.LARGE_RESOURCE_NODES)
    resource["name"].append({"family": 5})
    resource["name"][3]["nickname"] = "x"
    resource["gender"] = "man"
    resource["birthDate"] = "2020-13-01"
    resource["contained"] = [{"resourceType": "Patient", "gender": "x"}]
    issues = StructureValidator(RESOURCE_TYPES).validate(resource)
    found = {issue.expression[0]: issue.diagnostics for issue in issues}
    last = f"Patient.name[{structure.LARGE_RESOURCE_NODES}].family"
    assert set(found) == {
        last,
        "Patient.name[3].nickname",
        "Patient.gender",
        "Patient.birthDate",
        "Patient.contained[0].gender",
    }
    assert found["Patient.name[3].nickname"] == "Unknown element 'nickname'"
    assert found["Patient.birthDate"].startswith("Invalid value '2020-13-01'")
    assert all(issue.rofecare_code == "rofecare-1401" for issue in issues)


def test_a_large_valid_resource_is_accepted() -> None:
    assert StructureValidator(RESOURCE_TYPES).validate(_large_patient(5_000)) == []
