"""The provider behind the core's terminology hook: ICD-10, UCUM and the R4 core content."""

from __future__ import annotations

import pytest

from fhir_server.definitions.registry import profile_resources
from fhir_server.definitions.terminology import CodeCheck, Terminology
from terminology import provider
from terminology.provider import TerminologyProvider

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_ALL = "http://hl7.org/fhir/sid/icd-10?fhir_vs"
DIAGNOSIS = "http://rofecare.com/fhir/ValueSet/icd-10-diagnosis"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def terminology() -> TerminologyProvider:
    return provider()


def test_one_provider_per_process_that_is_the_core_hook() -> None:
    assert provider() is provider()
    hook: Terminology = provider()  # mypy checks the protocol is satisfied
    assert hook.knows_value_set(GENDER_VS)


def test_icd10_value_sets(terminology: TerminologyProvider) -> None:
    assert terminology.validate_code(ICD10_ALL, ICD10, "I") == CodeCheck(
        True, display="Certain infectious and parasitic diseases"
    )
    assert terminology.validate_code(DIAGNOSIS, ICD10, "A00.1") == CodeCheck(
        True, display="Cholera due to Vibrio cholerae 01, biovar eltor"
    )
    for grouping in ("I", "A00-A09"):  # chapters and blocks group, they do not diagnose
        check = terminology.validate_code(DIAGNOSIS, ICD10, grouping)
        assert check is not None and not check.valid
    undotted = terminology.validate_code(DIAGNOSIS, ICD10, "A001")
    assert undotted is not None and not undotted.valid
    assert undotted.message is not None and "did you mean 'A00.1'" in undotted.message
    codes = terminology.value_set_codes(DIAGNOSIS)
    assert codes is not None and len(codes) == 2_050 + 10_196
    assert (ICD10, "A00.1") in codes and (ICD10, "I") not in codes


def test_implicit_value_sets(terminology: TerminologyProvider) -> None:
    """``[system]?fhir_vs`` and ``[system]?fhir_vs=isa/[code]`` (snomedct.html#implicit)."""
    block = ICD10 + "?fhir_vs=isa/A00-A09"
    codes = terminology.value_set_codes(block)
    assert codes is not None and len(codes) == 71 and (ICD10, "A09.9") in codes
    assert terminology.validate_code(block, None, "A01.0") == CodeCheck(
        True, display="Typhoid fever"
    )
    outside = terminology.validate_code(block, None, "B01")
    assert outside == CodeCheck(
        False, f"{ICD10}|B01 is not in Intestinal infectious diseases and its descendants"
    )
    gender = terminology.value_set_codes(GENDER + "?fhir_vs")
    assert gender is not None and len(gender) == 4
    for unknown in ("?fhir_vs=isa/Z99.99", "?fhir_vs=refset/1", "?fhir_vs=isa/"):
        assert not terminology.knows_value_set(ICD10 + unknown), unknown


def test_validate_code_without_system(terminology: TerminologyProvider) -> None:
    """A ``code`` element: the binding's value set implies the system."""
    assert terminology.validate_code(GENDER_VS, None, "female") == CodeCheck(True, display="Female")
    check = terminology.validate_code(GENDER_VS, None, "f")
    assert check is not None and not check.valid and check.message
    assert terminology.validate_code(DIAGNOSIS, None, "A00.0") is not None


def test_validate_code_with_system_and_display(terminology: TerminologyProvider) -> None:
    assert terminology.validate_code(GENDER_VS, GENDER, "male", "MALE") == CodeCheck(
        True, display="Male"
    )
    wrong = terminology.validate_code(GENDER_VS, GENDER, "male", "Man")
    assert wrong == CodeCheck(
        False, "'Man' is not a display of male in " + GENDER + "; expected 'Male'", "Male"
    )
    other_system = terminology.validate_code(GENDER_VS, "http://example.org/other", "male")
    assert other_system is not None and not other_system.valid


def test_versions(terminology: TerminologyProvider) -> None:
    assert terminology.validate_code(GENDER_VS + "|4.0.1", None, "male") is not None
    assert terminology.validate_code(GENDER_VS + "|3.0.2", None, "male") is None
    assert not terminology.knows_value_set(GENDER_VS + "|3.0.2")
    assert terminology.validate_in_system(ICD10 + "|2019", "A00") == CodeCheck(
        True, display="Cholera"
    )
    assert terminology.validate_in_system(ICD10 + "|2016", "A00") is None


def test_unknown_value_sets_and_systems(terminology: TerminologyProvider) -> None:
    assert terminology.validate_code("http://example.org/nope", None, "x") is None
    assert not terminology.knows_value_set("http://example.org/nope")
    assert terminology.value_set_codes("http://example.org/nope") is None
    assert terminology.validate_in_system("http://example.org/nope", "x") is None
    assert not terminology.knows_value_set("http://example.org/nope?fhir_vs")


def test_value_sets_over_systems_not_held(terminology: TerminologyProvider) -> None:
    condition_code = "http://hl7.org/fhir/ValueSet/condition-code"  # SNOMED CT is-a filter
    assert terminology.knows_value_set(condition_code)
    assert terminology.validate_code(condition_code, SNOMED, "22298006") is None
    assert terminology.value_set_codes(condition_code) is None
    # ...but a code of another system is simply not in it.
    check = terminology.validate_code(condition_code, ICD10, "A00")
    assert check is not None and not check.valid


def test_code_system_content_rules(terminology: TerminologyProvider) -> None:
    """Only a complete code system may refuse a code (codesystem.html#content)."""
    fragment = "http://terminology.hl7.org/CodeSystem/insurance-plan-type"
    example = "http://terminology.hl7.org/CodeSystem/service-type"
    for system, listed in ((fragment, "medical"), (example, "1")):
        assert terminology.validate_in_system(system, "not-listed") is None
        check = terminology.validate_in_system(system, listed)
        assert check is not None and check.valid
    assert terminology.validate_in_system(SNOMED, "22298006") is None  # not-present
    complete = terminology.validate_in_system(GENDER, "nope")
    assert complete is not None and not complete.valid


def test_ucum(terminology: TerminologyProvider) -> None:
    for code in ("mg/dL", "Cel", "[pH]", "10*9/L", "/min"):
        assert terminology.validate_in_system(UCUM, code) == CodeCheck(True), code
    bad = terminology.validate_in_system(UCUM, "mg/dx")
    assert bad is not None and not bad.valid
    # UCUM value sets include the whole grammar: membership is validity, never enumerable.
    assert terminology.validate_code("http://hl7.org/fhir/ValueSet/ucum-units", UCUM, "kg") == (
        CodeCheck(True)
    )
    assert terminology.value_set_codes("http://hl7.org/fhir/ValueSet/ucum-units") is None
    assert terminology.knows_value_set(UCUM + "?fhir_vs")


def test_core_value_set_with_imports(terminology: TerminologyProvider) -> None:
    url = "http://hl7.org/fhir/ValueSet/event-or-request-resource-types"
    codes = terminology.value_set_codes(url)
    assert (
        codes is not None and ("http://hl7.org/fhir/event-resource-types", "Observation") in codes
    )
    assert ("http://hl7.org/fhir/request-resource-types", "ServiceRequest") in codes
    check = terminology.validate_code(url, None, "Patient")
    assert check is not None and not check.valid  # neither an event nor a request


def test_hierarchy_for_below_and_above(terminology: TerminologyProvider) -> None:
    below = terminology.descendants(ICD10, "A00")
    assert below == {"A00", "A00.0", "A00.1", "A00.9"}
    assert terminology.ancestors(ICD10, "A00.9") == {"A00.9", "A00", "A00-A09", "I"}
    assert terminology.descendants(ICD10, "nope") is None
    assert terminology.descendants(GENDER, "male") is None  # a flat code system
    assert terminology.descendants(UCUM, "mg") is None
    hierarchical = "http://terminology.hl7.org/CodeSystem/v3-ActCode"  # not held
    assert terminology.ancestors(hierarchical, "AMB") is None


def test_every_core_value_set_compiles_and_expands_or_says_it_cannot(
    terminology: TerminologyProvider,
) -> None:
    expanded = unknown = 0
    for url in terminology._core_content().value_sets:
        value_set = terminology.value_set(url)
        assert value_set is not None
        if value_set.expansion() is None:
            unknown += 1
        else:
            expanded += 1
    assert expanded > 500 and unknown > 50


def test_rofecare_value_sets_of_the_profiles_package_are_known(
    terminology: TerminologyProvider,
) -> None:
    """Rofecare profiles bind to Rofecare value sets: those bindings must be checkable."""
    value_sets = profile_resources("ValueSet")
    assert value_sets, "the profiles package ships ValueSets"
    for resource in value_sets:
        codes = terminology.value_set_codes(resource["url"])
        assert codes, resource["url"]
        system, code = sorted(codes)[0]
        check = terminology.validate_code(resource["url"], None, code)
        assert check is not None and check.valid, (resource["url"], code)
        wrong = terminology.validate_code(resource["url"], system, code + "-not-a-code")
        assert wrong is not None and not wrong.valid
