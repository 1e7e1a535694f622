"""Rofecare's packaged profiles (issue 7), proven by their examples.

Every profile listed in the issue exists and compiles; every packaged conformance resource
is valid R4 (the server publishes them as resources at start-up); each valid example passes
the R4 structure and the profile that governs it; each invalid example passes the R4
structure (so it is the profile, not the schema, that refuses it) and is refused with the
rule key in its file name; and docs/profiles.md is the page ``scripts/profiles_doc.py``
makes from all this.

Example files: ``profiles/<context>/examples/<profile id>.valid.json`` and
``<profile id>.invalid.<rule key>.json``, with ``~`` for ``:`` in the key.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fhir_server.definitions.registry import load_definitions, profile_resources
from fhir_server.definitions.terminology import CodeCheck, Terminology
from fhir_server.validation.profile_checker import BINDING_UNCHECKED
from fhir_server.validation.profile_registry import ProfileRegistry
from fhir_server.validation.structure import StructureValidator

PROFILES_DIR = Path(str(resources.files("profiles")))
REPO = Path(__file__).resolve().parents[3]
CANONICAL = "http://rofecare.com/fhir/StructureDefinition/"
ROFECARE_TERMINOLOGY = (
    "http://rofecare.com/fhir/CodeSystem/",
    "http://rofecare.com/fhir/ValueSet/",
)

ISSUE_7_PROFILES = {
    "patient": ["rofecare-patient", "rofecare-encounter", "rofecare-triage"],
    "clinical": ["rofecare-diagnosis", "rofecare-prescription"],
    "medtech": [
        "rofecare-lab-order",
        "rofecare-imaging-order",
        "rofecare-lab-result",
        "rofecare-equipment",
    ],
    "pharmacy": [
        "rofecare-medication",
        "rofecare-stock-item",
        "rofecare-stock-movement",
        "rofecare-dispensing",
    ],
    "finance": [
        "rofecare-charge-item",
        "rofecare-tariff",
        "rofecare-invoice",
        "rofecare-payment",
        "rofecare-coverage",
        "rofecare-claim",
        "rofecare-cash-session",
        "rofecare-daily-closing",
    ],
    "platform": [
        "rofecare-appointment",
        "rofecare-notification",
        "rofecare-document",
        "rofecare-audit-event",
    ],
    "interop": ["rofecare-partner-endpoint", "rofecare-subscription"],
}


@dataclass(frozen=True)
class Example:
    path: Path
    profile_id: str
    key: str | None  # None: the valid example

    @property
    def resource(self) -> dict[str, Any]:
        content: dict[str, Any] = json.loads(self.path.read_text())
        return content

    @property
    def url(self) -> str:
        return CANONICAL + self.profile_id


def _examples() -> list[Example]:
    found = []
    for path in sorted(PROFILES_DIR.rglob("examples/*.json")):
        profile_id, kind, *rest = path.name.removesuffix(".json").split(".", 2)
        key = rest[0].replace("~", ":") if kind == "invalid" and rest else None
        assert kind == "valid" or key, f"{path.name}: <id>.valid.json or <id>.invalid.<key>.json"
        found.append(Example(path, profile_id, key))
    return found


EXAMPLES = _examples()
VALID = [example for example in EXAMPLES if example.key is None]
INVALID = [example for example in EXAMPLES if example.key is not None]


def _packaged(resource_type: str) -> list[dict[str, Any]]:
    return profile_resources(resource_type)


def _definition(profile_id: str) -> dict[str, Any]:
    for definition in _packaged("StructureDefinition"):
        if definition["url"] == CANONICAL + profile_id:
            return definition
    raise LookupError(profile_id)


def _bound_value_set(example: Example) -> str:
    """The value set of the binding an invalid example's ``binding:`` key names."""
    assert example.key is not None
    element_id = example.key.removeprefix("binding:")
    for element in _definition(example.profile_id)["differential"]["element"]:
        if element["id"] == element_id:
            value_set: str = element["binding"]["valueSet"]
            return value_set
    raise LookupError(example.key)


def _real_terminology() -> Terminology | None:
    """The terminology plug-in's provider, as the app loads it (None: not built yet)."""
    module = importlib.import_module("terminology")
    factory = getattr(module, "provider", None)
    if factory is None:
        return None
    provider: Terminology = factory()
    return provider


class RofecareCodes:
    """The packaged Rofecare value sets answered from the packaged code systems, before the
    real provider is handed them (the core does that at start-up); everything else is the
    real provider's answer. Only what these value sets use is read: whole code systems and
    enumerated concepts."""

    def __init__(self, fallback: Terminology | None) -> None:
        self._fallback = fallback
        systems = {
            system["url"]: _concept_codes(system.get("concept", []))
            for system in _packaged("CodeSystem")
        }
        self._value_sets: dict[str, frozenset[tuple[str, str]]] = {}
        for value_set in _packaged("ValueSet"):
            members: set[tuple[str, str]] = set()
            for include in value_set["compose"]["include"]:
                system = include["system"]
                listed = [concept["code"] for concept in include.get("concept", [])]
                members.update((system, code) for code in listed or systems.get(system, []))
            self._value_sets[value_set["url"]] = frozenset(members)

    def knows_value_set(self, url: str) -> bool:
        if url.split("|")[0] in self._value_sets:
            return True
        return self._fallback is not None and self._fallback.knows_value_set(url)

    def validate_code(
        self, value_set: str, system: str | None, code: str, display: str | None = None
    ) -> CodeCheck | None:
        members = self._value_sets.get(value_set.split("|")[0])
        if members is None:
            if self._fallback is None:
                return None
            return self._fallback.validate_code(value_set, system, code, display)
        found = any(code == known and system in (None, s) for s, known in members)
        return CodeCheck(found, None if found else f"{code} is not in {value_set}")

    def validate_in_system(
        self, system: str, code: str, display: str | None = None
    ) -> CodeCheck | None:
        return None if self._fallback is None else self._fallback.validate_in_system(system, code)

    def value_set_codes(self, value_set: str) -> frozenset[tuple[str, str]] | None:
        return self._value_sets.get(value_set)

    def descendants(self, system: str, code: str) -> frozenset[str] | None:
        return None

    def ancestors(self, system: str, code: str) -> frozenset[str] | None:
        return None


def _concept_codes(concepts: list[dict[str, Any]]) -> list[str]:
    codes: list[str] = []
    for concept in concepts:
        codes.append(concept["code"])
        codes += _concept_codes(concept.get("concept", []))
    return codes


TERMINOLOGY = _real_terminology()


@pytest.fixture(scope="module")
def registry() -> ProfileRegistry:
    return ProfileRegistry(_packaged("StructureDefinition"), TERMINOLOGY)


@pytest.fixture(scope="module")
def with_rofecare_codes() -> ProfileRegistry:
    return ProfileRegistry(_packaged("StructureDefinition"), RofecareCodes(TERMINOLOGY))


@pytest.fixture(scope="module")
def structure() -> StructureValidator:
    return StructureValidator(load_definitions().resource_types)


def test_every_profile_of_issue_7_is_packaged_in_its_context(registry: ProfileRegistry) -> None:
    for context, ids in ISSUE_7_PROFILES.items():
        for profile_id in ids:
            assert registry.get(CANONICAL + profile_id) is not None, profile_id
            assert (PROFILES_DIR / context / f"{profile_id}.json").exists(), profile_id
            assert (PROFILES_DIR / context / "examples" / f"{profile_id}.valid.json").exists()


def test_packaged_conformance_resources_are_valid_r4(structure: StructureValidator) -> None:
    """The server publishes them as resources at start-up: each must be valid R4."""
    for resource_type in ("StructureDefinition", "CodeSystem", "ValueSet"):
        for resource in _packaged(resource_type):
            assert structure.validate(resource) == [], resource["url"]


def test_the_contexts_resources_follow_the_conventions() -> None:
    keys: list[str] = []
    for context in ISSUE_7_PROFILES:
        for path in sorted((PROFILES_DIR / context).glob("*.json")):
            resource = json.loads(path.read_text())
            if resource["resourceType"] not in ("StructureDefinition", "CodeSystem", "ValueSet"):
                continue
            assert resource["version"] == "0.1.0" and resource["status"] == "active"
            assert resource["description"], resource["url"]
            base = resource["url"].rsplit("/", 1)[0] + "/"
            assert base in (CANONICAL, *ROFECARE_TERMINOLOGY), resource["url"]
            assert resource["url"].endswith("/" + resource["id"])
            if resource["resourceType"] == "CodeSystem":
                assert resource["content"] == "complete"
            if resource["resourceType"] != "StructureDefinition":
                continue
            assert resource["fhirVersion"] == "4.0.1" and resource["derivation"] == "constraint"
            if resource["type"] == "Extension":
                assert resource["kind"] == "complex-type" and resource["context"]
                continue
            assert resource["kind"] == "resource" and path.stem == resource["id"]
            for element in resource["differential"]["element"]:
                keys += [constraint["key"] for constraint in element.get("constraint", [])]
    assert all(re.fullmatch(r"rof-[a-z]+-\d+", key) for key in keys), keys
    assert len(keys) == len(set(keys)), "constraint keys are unique across profiles"


def test_every_constraint_key_has_an_invalid_example() -> None:
    tested = {(example.profile_id, example.key) for example in INVALID}
    for definition in _packaged("StructureDefinition"):
        if definition["type"] == "Extension":
            continue
        for element in definition["differential"]["element"]:
            for constraint in element.get("constraint", []):
                assert (definition["id"], constraint["key"]) in tested, constraint["key"]


@pytest.mark.parametrize("example", VALID, ids=lambda example: example.path.name)
def test_valid_example_passes_structure_and_its_profile(
    example: Example, registry: ProfileRegistry, structure: StructureValidator
) -> None:
    resource = example.resource
    assert structure.validate(resource) == []
    assert example.url in {profile.url for profile in registry.governing(resource)}
    issues = registry.issues(resource)
    # an unknown value set may only be reported as unchecked, nothing else
    assert [i for i in issues if i.rofecare_code != BINDING_UNCHECKED] == [], issues


@pytest.mark.parametrize("example", INVALID, ids=lambda example: example.path.name)
def test_invalid_example_is_refused_with_its_key(
    example: Example, registry: ProfileRegistry, structure: StructureValidator
) -> None:
    resource = example.resource
    assert structure.validate(resource) == [], "only the profile should refuse it"
    if example.key is not None and example.key.startswith("binding:"):
        value_set = _bound_value_set(example)
        if TERMINOLOGY is None or not TERMINOLOGY.knows_value_set(value_set):
            pytest.skip(
                f"{value_set} is not known to the terminology provider yet, so the binding "
                "is not checked (see test_binding_examples_against_the_packaged_value_sets)"
            )
    issues = registry.issues(resource)
    expected = "warning" if _is_warning(example) else "error"
    found = {(issue.key, issue.severity) for issue in issues}
    assert (example.key, expected) in found, issues
    profiles = {profile.url for profile in registry.governing(resource)} | set(
        resource.get("meta", {}).get("profile", [])
    )
    assert example.url in profiles


@pytest.mark.parametrize(
    "example",
    [example for example in EXAMPLES if example.key is None or "binding:" in example.key],
    ids=lambda example: example.path.name,
)
def test_binding_examples_against_the_packaged_value_sets(
    example: Example, with_rofecare_codes: ProfileRegistry
) -> None:
    """With Rofecare's own value sets answered from the packaged code systems, the valid
    examples bind and each ``binding:`` example is refused."""
    issues = with_rofecare_codes.issues(example.resource)
    errors = {issue.key for issue in issues if issue.severity == "error"}
    if example.key is None:
        assert errors == set(), issues
    else:
        assert example.key in errors, issues


@pytest.mark.parametrize(
    ("start", "end", "refused"),
    [
        ("2026-03-14T09:30:00+01:00", "2026-03-14T09:00:00Z", False),  # 08:30Z -> 09:00Z
        ("2026-03-14T10:00:00+02:00", "2026-03-14T08:30:00Z", False),
        ("2026-03-14T09:30:00Z", "2026-03-14T10:00:00+01:00", True),  # 09:30Z -> 09:00Z
        ("2026-03-14", "2026-03-14T09:00:00Z", False),  # precisions differ: unknown, passes
    ],
)
def test_time_comparisons_are_instants_not_strings(
    start: str, end: str, refused: bool, registry: ProfileRegistry
) -> None:
    """fhirpathpy compares two dateTime *elements* as strings; the profiles compare
    ``x.toDateTime()``, which respects time zones (rof-enc-3, rof-cash-1, rof-apt-2)."""
    encounter = _example("rofecare-encounter.valid.json").resource
    encounter["period"] = {"start": start, "end": end}
    keys = {issue.key for issue in registry.issues(encounter)}
    assert ("rof-enc-3" in keys) is refused


def _example(name: str) -> Example:
    return next(example for example in EXAMPLES if example.path.name == name)


def _is_warning(example: Example) -> bool:
    for element in _definition(example.profile_id)["differential"]["element"]:
        for constraint in element.get("constraint", []):
            if constraint["key"] == example.key:
                return bool(constraint.get("severity") == "warning")
    return False


def test_docs_profiles_md_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "profiles_doc", REPO / "scripts" / "profiles_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (REPO / "docs" / "profiles.md").read_text()
    assert module.render(REPO) == page, "run python3 scripts/profiles_doc.py"
