"""Index entries per R4 search type, from the shipped SearchParameters."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fhir_server.model.instant import parse_date_range, to_micros
from fhir_server.search.indexer import Indexer, normalize
from fhir_server.search.registry import (
    NOT_R4,
    SearchParameter,
    SearchParameterRegistry,
    load_search_parameters,
)
from fhir_server.search.tokens import split_escaped, unescape
from fhir_server.search.values import (
    DateEntry,
    IndexEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
)

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"


@pytest.fixture(scope="module")
def indexer() -> Indexer:
    return Indexer(load_search_parameters())


def _of(entries: list[IndexEntry], param: str) -> list[IndexEntry]:
    return [entry for entry in entries if entry.param == param]


def _range(text: str) -> tuple[int, int]:
    interval = parse_date_range(text)
    assert interval is not None
    return to_micros(interval[0]), to_micros(interval[1])


def test_registry_covers_r4_and_skips_non_r4_additions() -> None:
    registry = load_search_parameters()
    assert registry.get("Patient", "birthdate") is not None
    assert registry.get("Observation", "value-quantity") is not None
    assert registry.get("Patient", "_id") is not None  # Resource-level parameters apply too
    assert registry.get("DetectedIssue", "status") is None
    assert "DetectedIssue-status" in NOT_R4
    compiled = [
        p.compiled for t in ("Patient", "Observation") for p in registry.for_type(t).values()
    ]
    assert sum(compiled) / len(compiled) > 0.9


def test_patient_entries(indexer: Indexer) -> None:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:mrn", "value": "42"}],
        "name": [{"family": "Ngozí", "given": ["Adaeze", "Chi"]}],
        "gender": "female",
        "birthDate": "1984-03",
        "active": True,
        "telecom": [{"system": "email", "value": "a@example.org"}],
        "managingOrganization": {"reference": "Organization/o1"},
    }
    entries = indexer.entries(patient)
    assert TokenEntry("identifier", "urn:mrn", "42") in entries
    assert TokenEntry("gender", None, "female") in entries
    assert TokenEntry("active", None, "true") in entries
    assert not _of(entries, "_id")  # _id and _lastUpdated are store columns, not entries
    assert TokenEntry("email", None, "a@example.org") in entries
    assert StringEntry("family", "ngozi", "Ngozí") in entries
    assert {e.normalized for e in _of(entries, "given")} == {"adaeze", "chi"}  # type: ignore[union-attr]
    assert DateEntry("birthdate", *_range("1984-03")) in entries
    assert ReferenceEntry("organization", "Organization", "o1", None) in entries
    assert len(entries) == len(set(entries))


def test_observation_entries(indexer: Indexer) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "HR"},
        "subject": {"reference": "http://other.example/fhir/Patient/9/_history/2"},
        "effectivePeriod": {"start": "2024-01-01T10:00:00Z"},
        "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    entries = indexer.entries(observation)
    assert TokenEntry("code", "http://loinc.org", "8867-4") in entries
    assert TokenEntry("status", None, "final") in entries
    ucum = "http://unitsofmeasure.org"
    assert QuantityEntry("value-quantity", 72.0, ucum, "/min", 1.2, "s-1") in entries
    assert TokenEntry("code", None, "", "hr") in entries  # CodeableConcept.text for :text
    low, _ = _range("2024-01-01T10:00:00Z")
    assert DateEntry("date", low, None) in entries  # an open-ended Period
    subject = _of(entries, "subject")
    assert subject == [
        ReferenceEntry("subject", None, None, "http://other.example/fhir/Patient/9/_history/2")
    ]
    # The URL names a Patient, so the reference also counts for `patient`.
    assert _of(entries, "patient") == [
        ReferenceEntry("patient", None, None, "http://other.example/fhir/Patient/9/_history/2")
    ]


def test_a_composite_item_is_stored_only_with_every_component(indexer: Indexer) -> None:
    """A quantity Observation has a code-value-quantity pair; code-value-concept, -string
    and -date have no value, so none of their code components is stored (they could never
    match, and they were 15 % of Synthea's entries). Blood pressure: the component without
    a value has no component-code-value-quantity group."""
    heart_rate = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    entries = indexer.entries(heart_rate)
    codes = {entry.param for entry in entries if "$" in entry.param}
    assert "code-value-quantity$0" in codes and "code-value-quantity$1" in codes
    for unused in ("code-value-concept", "code-value-string", "code-value-date"):
        assert not any(code.startswith(unused + "$") for code in codes), unused
    pressure = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org"},
            },
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}},
        ],
    }
    pairs = _of(indexer.entries(pressure), "component-code-value-quantity$0")
    assert [(entry.code, entry.group) for entry in pairs] == [("8480-6", 1)]  # type: ignore[union-attr]


def test_relative_and_contained_references(indexer: Indexer) -> None:
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1/_history/3"},
        "asserter": {"reference": "#contained"},
    }
    entries = indexer.entries(condition)
    assert ReferenceEntry("subject", "Patient", "p1", None) in entries
    assert ReferenceEntry("patient", "Patient", "p1", None) in entries
    assert _of(entries, "asserter") == []


def test_normalize() -> None:
    assert normalize("ÉLOÏSE Straße") == "eloise strasse"


@pytest.mark.parametrize(
    ("text", "separator", "parts"),
    [
        ("a,b", ",", ["a", "b"]),
        ("a\\,b,c", ",", ["a\\,b", "c"]),  # escapes stay until the leaf value
        ("sys|A\\|B", "|", ["sys", "A\\|B"]),
        ("\\", ",", ["\\"]),
        ("", ",", [""]),  # without a backslash, str.split: empty parts are kept
        (",a,,b,", ",", ["", "a", "", "b", ""]),
        ("a\\,,b", ",", ["a\\,", "b"]),
    ],
)
def test_split_escaped_keeps_escapes(text: str, separator: str, parts: list[str]) -> None:
    assert split_escaped(text, separator) == parts


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("A\\|B", "A|B"),
        ("1\\,2", "1,2"),
        ("a\\$b", "a$b"),
        ("\\\\", "\\"),
        ("\\", "\\"),
        ("\\x", "\\x"),
    ],
)
def test_unescape(text: str, plain: str) -> None:
    assert unescape(text) == plain


def test_skipping_parameters_whose_elements_are_absent_changes_no_entry(
    indexer: Indexer,
) -> None:
    """Indexer evaluates only the parameters whose expressions start from a key the resource
    has; every Synthea resource of one patient must get exactly what evaluating all of its
    type's parameters gives (``reads=None`` turns the choice off)."""
    every = {
        name: {code: replace(parameter, reads=None) for code, parameter in own.items()}
        for name, own in load_search_parameters()._by_type.items()
    }
    unfiltered = Indexer(SearchParameterRegistry(every))
    bundle = json.loads(next(SYNTHEA.glob("selfcontained/*.json")).read_text())
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert len({resource["resourceType"] for resource in resources}) > 10
    for resource in resources:
        assert set(indexer.entries(resource)) == set(unfiltered.entries(resource)), resource["id"]
    # The parameters over meta are chosen by the keys of meta: one shape of a resource
    # with each of them, then without, in turn.
    metas: list[dict[str, Any]] = [
        {"versionId": "1", "lastUpdated": "2026-12-03T10:00:00Z"},
        {"versionId": "2", "tag": [{"system": "http://example.org/tags", "code": "vip"}]},
        {"profile": ["http://example.org/StructureDefinition/p"], "source": "urn:x:lab"},
        {"security": [{"system": "http://example.org/s", "code": "R"}]},
        {"versionId": "3"},
    ]
    for resource in resources[:20]:
        for meta in metas:
            tagged = {**resource, "meta": meta}
            assert set(indexer.entries(tagged)) == set(unfiltered.entries(tagged)), meta
    assert registry_parameter("Patient", "_tag").reads == frozenset({"meta.tag"})
    patient = registry_parameter("Patient", "link")
    assert patient.reads == frozenset({"link"})
    assert registry_parameter("Patient", "deceased").reads is None  # true or false, always


def registry_parameter(resource_type: str, code: str) -> SearchParameter:
    found = load_search_parameters().get(resource_type, code)
    assert found is not None
    return found
