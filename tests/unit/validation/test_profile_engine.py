"""The differential profile engine: each kind of rule accepted and refused, with its key
and path, and profiles it cannot enforce refused when compiled."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.definitions.terminology import CodeCheck
from fhir_server.validation.profile_compiler import ProfileError
from fhir_server.validation.profile_registry import ProfileRegistry

URL = "http://rofecare.com/fhir/StructureDefinition/test-observation"


def definition(*elements: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": URL,
        "name": "TestObservation",
        "status": "active",
        "kind": "resource",
        "abstract": False,
        "type": "Observation",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation",
        "derivation": "constraint",
        "differential": {"element": [{"id": "Observation", "path": "Observation"}, *elements]},
        **extra,
    }


def element(element_id: str, **rules: Any) -> dict[str, Any]:
    path = ".".join(part.split(":")[0] for part in element_id.split("."))
    return {"id": element_id, "path": path, **rules}


def observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        **extra,
    }


class ListedCodes:
    """A stand-in terminology (the engine's contract, not the real provider's content,
    is under test here): one value set of listed codes; everything else unknown."""

    def __init__(self, url: str, codes: set[tuple[str | None, str]]) -> None:
        self.url, self.codes = url, codes

    def knows_value_set(self, url: str) -> bool:
        return url == self.url

    def validate_code(
        self, value_set: str, system: str | None, code: str, display: str | None = None
    ) -> CodeCheck | None:
        if value_set != self.url:
            return None
        found = any(
            code == known and system in (None, known_system) for known_system, known in self.codes
        )
        return CodeCheck(found, None if found else "not in the value set")

    def validate_in_system(self, system: str, code: str, display: str | None = None) -> None:
        return None

    def value_set_codes(self, value_set: str) -> None:
        return None

    def descendants(self, system: str, code: str) -> None:
        return None

    def ancestors(self, system: str, code: str) -> None:
        return None


def faults(
    profile: dict[str, Any], resource: dict[str, Any], terminology: Any = None
) -> list[tuple[str | None, str, str]]:
    registry = ProfileRegistry([profile], terminology)
    return [
        (issue.key, issue.expression[0] if issue.expression else "", issue.severity)
        for issue in registry.issues(resource)
    ]


def test_cardinality_within_each_parent_occurrence() -> None:
    profile = definition(
        element("Observation.subject", min=1),
        element("Observation.note", max="1"),
        element("Observation.referenceRange.low", min=1),
    )
    resource = observation(
        subject={"reference": "Patient/1"},
        referenceRange=[{"low": {"value": 1}}, {"text": "no low"}],
    )
    assert faults(profile, resource) == [
        ("min:Observation.referenceRange.low", "Observation.referenceRange[1].low", "error")
    ]
    missing = observation(note=[{"text": "a"}, {"text": "b"}])
    assert faults(profile, missing) == [
        ("min:Observation.subject", "Observation.subject", "error"),
        ("max:Observation.note", "Observation.note", "error"),
    ]


def test_a_primitive_present_only_through_its_extension_counts() -> None:
    profile = definition(element("Observation.issued", min=1))
    resource = observation(_issued={"extension": [{"url": "http://x", "valueString": "?"}]})
    assert faults(profile, resource) == []


def test_fixed_is_equality_and_pattern_is_containment() -> None:
    profile = definition(
        element("Observation.status", fixedCode="final"),
        element(
            "Observation.category",
            patternCodeableConcept={"coding": [{"code": "laboratory"}]},
        ),
    )
    lab = {"coding": [{"system": "http://x", "code": "laboratory", "display": "Lab"}]}
    assert faults(profile, observation(category=[lab])) == []
    wrong = observation(status="preliminary", category=[{"coding": [{"code": "imaging"}]}])
    assert faults(profile, wrong) == [
        ("fixed:Observation.status", "Observation.status", "error"),
        ("pattern:Observation.category", "Observation.category[0]", "error"),
    ]


def test_choice_types_and_reference_targets() -> None:
    profile = definition(
        element("Observation.value[x]", type=[{"code": "Quantity"}]),
        element(
            "Observation.subject",
            type=[
                {
                    "code": "Reference",
                    "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Patient"],
                }
            ],
        ),
    )
    good = observation(valueQuantity={"value": 1}, subject={"reference": "Patient/p"})
    assert faults(profile, good) == []
    absolute = observation(subject={"reference": "https://other.org/fhir/Patient/p/_history/2"})
    assert faults(profile, absolute) == []
    bad = observation(valueString="high", subject={"reference": "Group/g"})
    assert faults(profile, bad) == [
        ("type:Observation.value[x]", "Observation.valueString", "error"),
        ("target:Observation.subject", "Observation.subject", "error"),
    ]


def test_slices_by_pattern_with_their_own_rules_and_closed_slicing() -> None:
    profile = definition(
        element(
            "Observation.identifier",
            slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"},
        ),
        element("Observation.identifier:lab", sliceName="lab", min=1, max="1"),
        element("Observation.identifier:lab.system", fixedUri="urn:lab"),
        element("Observation.identifier:lab.value", min=1, maxLength=8),
        element("Observation.identifier:order", sliceName="order", min=0, max="*"),
        element("Observation.identifier:order.system", fixedUri="urn:order"),
    )
    good = observation(identifier=[{"system": "urn:order"}, {"system": "urn:lab", "value": "L-1"}])
    assert faults(profile, good) == []
    bad = observation(
        identifier=[
            {"system": "urn:lab", "value": "much-too-long"},
            {"system": "urn:lab"},
            {"system": "urn:other", "value": "x"},
        ]
    )
    assert sorted(faults(profile, bad)) == sorted(
        [
            ("slice:Observation.identifier", "Observation.identifier[2]", "error"),
            ("max:Observation.identifier:lab", "Observation.identifier", "error"),
            (
                "maxLength:Observation.identifier:lab.value",
                "Observation.identifier[0].value",
                "error",
            ),
            ("min:Observation.identifier:lab.value", "Observation.identifier[1].value", "error"),
        ]
    )


def test_extension_slices_by_url() -> None:
    profile = definition(
        element(
            "Observation.extension",
            slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
        ),
        element(
            "Observation.extension:lot",
            sliceName="lot",
            min=1,
            type=[{"code": "Extension", "profile": ["http://rofecare.com/ext/lot"]}],
        ),
    )
    assert faults(profile, observation()) == [
        ("min:Observation.extension:lot", "Observation.extension", "error")
    ]
    tagged = observation(extension=[{"url": "http://rofecare.com/ext/lot", "valueString": "A"}])
    assert faults(profile, tagged) == []


def test_constraints_by_key_at_the_root_and_on_elements() -> None:
    profile = definition(
        element(
            "Observation",
            constraint=[
                {
                    "key": "rof-t-1",
                    "severity": "error",
                    "human": "a value or a reason for its absence",
                    "expression": "value.exists() or dataAbsentReason.exists()",
                },
                {
                    "key": "rof-t-2",
                    "severity": "warning",
                    "human": "a performer is expected",
                    "expression": "performer.exists()",
                },
            ],
        ),
        element(
            "Observation.referenceRange",
            constraint=[
                {
                    "key": "rof-t-3",
                    "severity": "error",
                    "human": "a range has a low or a high",
                    "expression": "low.exists() or high.exists()",
                }
            ],
        ),
    )
    profile["differential"]["element"].pop(0)  # the constrained root replaces the bare one
    resource = observation(referenceRange=[{"low": {"value": 1}}, {"text": "?"}])
    assert faults(profile, resource) == [
        ("rof-t-1", "Observation", "error"),
        ("rof-t-2", "Observation", "warning"),
        ("rof-t-3", "Observation.referenceRange[1]", "error"),
    ]
    fine = observation(valueInteger=1, performer=[{"reference": "Practitioner/1"}])
    assert faults(profile, fine) == []


def test_required_binding_through_the_terminology_hook() -> None:
    value_set = "http://rofecare.com/fhir/ValueSet/test-status"
    profile = definition(
        element("Observation.status", binding={"strength": "required", "valueSet": value_set}),
        element(
            "Observation.code",
            binding={"strength": "required", "valueSet": "http://unknown.org/vs"},
        ),
    )
    terminology = ListedCodes(value_set, {(None, "final")})
    assert faults(profile, observation(), terminology) == [
        ("binding:Observation.code", "Observation.code", "warning")
    ]
    assert ("binding:Observation.status", "Observation.status", "error") in faults(
        profile, observation(status="amended"), terminology
    )


def test_applies_to_selects_the_governed_resources() -> None:
    profile = definition(
        element("Observation.subject", min=1),
        extension=[
            {
                "url": "http://rofecare.com/fhir/StructureDefinition/applies-to",
                "valueString": "category.coding.where(code = 'laboratory').exists()",
            }
        ],
    )
    registry = ProfileRegistry([profile])
    lab = observation(category=[{"coding": [{"code": "laboratory"}]}])
    assert [issue.key for issue in registry.issues(lab)] == ["min:Observation.subject"]
    assert registry.issues(observation()) == []
    declared = observation(meta={"profile": [URL]})
    assert [issue.key for issue in registry.issues(declared)] == ["min:Observation.subject"]


def test_declared_profiles_unknown_or_of_another_type() -> None:
    registry = ProfileRegistry([definition(element("Observation.subject", min=1))])
    unknown = observation(meta={"profile": ["http://example.org/unknown"]})
    [warning] = [i for i in registry.issues(unknown) if i.rofecare_code == "rofecare-1805"]
    assert warning.severity == "warning" and warning.expression == ("Observation.meta.profile[0]",)
    patient = {"resourceType": "Patient", "meta": {"profile": [URL]}}
    [error] = registry.issues(patient)
    assert error.severity == "error" and error.rofecare_code == "rofecare-1806"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["differential"]["element"].append(element("Observation.nothing")), "no el"),
        (
            lambda d: d["differential"]["element"].append(
                element(
                    "Observation.identifier",
                    slicing={"discriminator": [{"type": "type", "path": "$this"}]},
                )
            ),
            "value or pattern",
        ),
        (
            lambda d: d["differential"]["element"].append(
                element("Observation.identifier:x", sliceName="x")
            ),
            "before the slicing",
        ),
        (
            lambda d: d["differential"]["element"].append(
                element("Observation.status", minValueInteger=1)
            ),
            "not enforced here",
        ),
        (
            lambda d: d["differential"]["element"].append(
                element(
                    "Observation",
                    constraint=[{"key": "k", "expression": "status = = 'x'"}],
                )
            ),
            "cannot compile",
        ),
        (lambda d: d.update(baseDefinition="http://example.org/other"), "baseDefinition"),
        (lambda d: d.update(derivation="specialization"), "constraint"),
    ],
)
def test_what_cannot_be_enforced_is_refused_at_compile_time(change: Any, message: str) -> None:
    profile = copy.deepcopy(definition())
    change(profile)
    with pytest.raises(ProfileError, match=message):
        ProfileRegistry([profile])


def test_a_slice_without_a_discriminating_value_is_refused() -> None:
    profile = definition(
        element(
            "Observation.identifier",
            slicing={"discriminator": [{"type": "value", "path": "system"}]},
        ),
        element("Observation.identifier:a", sliceName="a", min=1),
    )
    with pytest.raises(ProfileError, match="discriminator"):
        ProfileRegistry([profile])
