"""Self-checks of the search case table, so a wrong case fails here and not in the engine's run.

Every case must be runnable as written: unique names, expected ids among the fixtures of the
searched type, fixtures that are valid R4 JSON, and a query whose parameters, modifiers, chains
and _has links exist in R4 (a misspelt parameter would silently test nothing, since servers
ignore unknown parameters).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhir_server.definitions.registry import DATA_DIR, load_definitions
from fhir_server.validation.structure import StructureValidator
from tests.contract.search_cases import ALL_CASES, SPEC, SearchCase

MODIFIERS = frozenset(
    {"missing", "exact", "contains", "text", "not", "above", "below", "in", "not-in", "of-type"}
    | {"identifier"}
)
RESULT_PARAMETERS = frozenset({"_sort", "_count", "_include", "_revinclude", "_summary"})
# Elements R4 requires (min 1) on the types the fixtures use; the JSON schema does not check
# required primitives, whose "_status" form may stand in for "status".
REQUIRED = {
    "Observation": ("status", "code"),
    "Encounter": ("status", "class"),
    "RiskAssessment": ("status", "subject"),
    "ChargeItem": ("status", "code", "subject"),
    "MolecularSequence": ("coordinateSystem",),
    "Provenance": ("target", "recorded", "agent"),
    "AuditEvent": ("type", "recorded", "agent", "source"),
    "Group": ("type", "actual"),
    "ValueSet": ("status",),
    "CodeSystem": ("status", "content"),
    "QuestionnaireResponse": ("status",),
}

Parameter = tuple[str, tuple[str, ...]]  # (search type, target resource types)


@functools.cache
def _parameters() -> dict[str, dict[str, Parameter]]:
    """Search parameters by resource type, from the packaged R4 SearchParameter bundle."""
    bundle = json.loads((DATA_DIR / "search-parameters.json").read_text())
    by_type: dict[str, dict[str, Parameter]] = {}
    for entry in bundle["entry"]:
        definition = entry["resource"]
        parameter = (definition["type"], tuple(definition.get("target", ())))
        for base in definition.get("base", ()):
            by_type.setdefault(base, {})[definition["code"]] = parameter
    return by_type


def _parameter(resource_type: str, code: str) -> Parameter | None:
    table = _parameters()
    for scope in (resource_type, "DomainResource", "Resource"):
        if code in table.get(scope, {}):
            return table[scope][code]
    return None


def _check_name(resource_type: str, name: str) -> None:
    """Asserts that a parameter name (with modifiers, chains or _has) exists in R4."""
    if name.startswith("_has:"):
        _, source, reference, rest = name.split(":", 3)
        assert source in load_definitions().resource_types, f"_has type {source!r}"
        parameter = _parameter(source, reference)
        assert parameter is not None and parameter[0] == "reference", f"_has via {reference!r}"
        assert resource_type in parameter[1], f"{source}.{reference} cannot refer to it"
        _check_name(source, rest)
        return
    if name in RESULT_PARAMETERS:
        return
    types = {resource_type}
    links = name.split(".")
    for position, link in enumerate(links):
        code, _, modifier = link.partition(":")
        found = {t: p for t in types if (p := _parameter(t, code)) is not None}
        assert found, f"no parameter {code!r} on {sorted(types)}"
        if position == len(links) - 1:
            is_type = modifier in load_definitions().resource_types
            assert not modifier or modifier in MODIFIERS or is_type, f"modifier {modifier!r}"
            return
        assert all(kind == "reference" for kind, _ in found.values()), f"{code!r} chains"
        targets = {target for _, targets in found.values() for target in targets}
        if modifier:
            assert modifier in targets, f"{code!r} cannot refer to a {modifier}"
            types = {modifier}
        else:
            types = targets


@pytest.fixture(scope="module")
def validator() -> StructureValidator:
    return StructureValidator(load_definitions().resource_types)


def test_case_names_are_unique() -> None:
    counts = Counter(case.name for case in ALL_CASES)
    assert [name for name, count in counts.items() if count > 1] == []


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.name)
def test_case_is_consistent(case: SearchCase) -> None:
    keys = [(fixture.get("resourceType"), fixture.get("id")) for fixture in case.fixtures]
    assert all(isinstance(kind, str) and isinstance(id_, str) for kind, id_ in keys)
    assert len(keys) == len(set(keys)), "fixture type+id repeated"
    candidates = {id_ for kind, id_ in keys if kind == case.resource_type}
    assert set(case.expected) <= candidates, set(case.expected) - candidates
    assert len(case.expected) == len(set(case.expected))
    if not case.ordered:
        assert set(case.expected) != candidates, "no fixture shows what must not match"
    assert case.resource_type in load_definitions().resource_types
    assert f"{SPEC}#" in case.note, "the note names its search.html anchor"


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.name)
def test_query_is_well_formed(case: SearchCase) -> None:
    assert "+" not in case.query, "a raw '+' is a space: send %2B"
    assert "#" not in case.query and " " not in case.query
    pairs = parse_qsl(case.query, keep_blank_values=True, strict_parsing=True)
    assert pairs
    for name, value in pairs:
        assert value, f"{name} has no value"
        _check_name(case.resource_type, name)
        if name == "_sort":
            for key in value.split(","):
                assert _parameter(case.resource_type, key.removeprefix("-")), key
    assert case.ordered == any(name == "_sort" for name, _ in pairs)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.name)
def test_fixtures_are_valid_r4(case: SearchCase, validator: StructureValidator) -> None:
    for fixture in case.fixtures:
        issues = validator.validate(fixture)
        assert issues == [], (fixture["id"], [issue.diagnostics for issue in issues])
        missing: list[Any] = [
            name for name in REQUIRED.get(fixture["resourceType"], ()) if name not in fixture
        ]
        assert missing == [], (fixture["id"], missing)
