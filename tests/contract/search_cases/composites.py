"""Composite parameters (search.html#composite): values joined by '$' match one element together.

Both halves of a composite value must hold for the *same* repetition (the same component, the
same useContext, the same characteristic), which is what separate parameters cannot express.
"""

from __future__ import annotations

from tests.contract.search_cases import (
    LOINC,
    SNOMED,
    SPEC,
    Resource,
    SearchCase,
    coding,
    concept,
    observation,
    quantity,
)

COMPOSITE = f"{SPEC}#composite"
MULTI = f"{SPEC}#combining"

SYSTOLIC = concept(coding(LOINC, "8480-6", "Systolic blood pressure"))
DIASTOLIC = concept(coding(LOINC, "8462-4", "Diastolic blood pressure"))
BP_PANEL = concept(coding(LOINC, "85354-9", "Blood pressure panel"))
LOCAL = "http://example.org/codes"
USAGE = "http://terminology.hl7.org/CodeSystem/usage-context-type"


def _mmhg(value: int) -> Resource:
    return quantity(value, "mm[Hg]")


def _bp(id_: str, systolic: int, diastolic: int) -> Resource:
    return observation(
        id_,
        BP_PANEL,
        component=[
            {"code": SYSTOLIC, "valueQuantity": _mmhg(systolic)},
            {"code": DIASTOLIC, "valueQuantity": _mmhg(diastolic)},
        ],
    )


PRESSURES = (
    _bp("bp-high", 120, 80),
    _bp("bp-low", 95, 60),
    _bp("bp-crossed", 130, 55),
    observation("sys-55", SYSTOLIC, valueQuantity=_mmhg(55)),
    observation("sys-120", SYSTOLIC, valueQuantity=_mmhg(120)),
    observation("dia-50", DIASTOLIC, valueQuantity=_mmhg(50)),
)

SARS_COV_2 = concept(coding(LOINC, "94500-6", "SARS-CoV-2 RNA Pr Resp NAA+probe"))
DETECTED = concept(coding(SNOMED, "260373001", "Detected"))
NOT_DETECTED = concept(coding(SNOMED, "260415000", "Not detected"))

CONCEPTS = (
    observation("cv-pos", SARS_COV_2, valueCodeableConcept=DETECTED),
    observation("cv-neg", SARS_COV_2, valueCodeableConcept=NOT_DETECTED),
    observation("cv-other", concept(coding(LOCAL, "flu")), valueCodeableConcept=DETECTED),
)

STRINGS = (
    observation("cs-a", concept(coding(LOCAL, "note")), valueString="Positive for influenza A"),
    observation("cs-b", concept(coding(LOCAL, "note")), valueString="Negative"),
    observation("cs-c", concept(coding(LOCAL, "comment")), valueString="Positive"),
)

DATES = (
    observation("cd-onset-2020", concept(coding(LOCAL, "onset")), valueDateTime="2020-05-01"),
    observation("cd-onset-2019", concept(coding(LOCAL, "onset")), valueDateTime="2019-05-01"),
    observation("cd-resolved", concept(coding(LOCAL, "resolved")), valueDateTime="2020-06-01"),
)


def _context(code: str, value: Resource) -> Resource:
    return {"code": coding(USAGE, code), **value}


VALUE_SET_CONTEXTS = (
    {
        "resourceType": "ValueSet",
        "id": "vsc-focus",
        "status": "active",
        "useContext": [
            _context("focus", {"valueCodeableConcept": concept(coding(SNOMED, "408934002"))}),
            _context(
                "venue",
                {
                    "valueCodeableConcept": concept(
                        coding("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "ER")
                    )
                },
            ),
        ],
    },
    {
        "resourceType": "ValueSet",
        "id": "vsc-venue",
        "status": "active",
        "useContext": [
            _context("venue", {"valueCodeableConcept": concept(coding(SNOMED, "408934002"))}),
            _context("focus", {"valueCodeableConcept": concept(coding(SNOMED, "10000000"))}),
        ],
    },
    {
        "resourceType": "ValueSet",
        "id": "vsc-age-65",
        "status": "active",
        "useContext": [_context("age", {"valueQuantity": quantity(65, "a")})],
    },
    {
        "resourceType": "ValueSet",
        "id": "vsc-age-10",
        "status": "active",
        "useContext": [_context("age", {"valueQuantity": quantity(10, "a")})],
    },
)


def _characteristic(code: str, value: str) -> Resource:
    return {
        "code": concept(coding("http://example.org/characteristics", code)),
        "valueCodeableConcept": concept(coding("http://example.org/values", value)),
        "exclude": False,
    }


GROUPS = (
    {
        "resourceType": "Group",
        "id": "grp-mixed",
        "type": "person",
        "actual": False,
        "characteristic": [_characteristic("gender", "mixed")],
    },
    {
        "resourceType": "Group",
        "id": "grp-crossed",
        "type": "person",
        "actual": False,
        "characteristic": [
            _characteristic("gender", "female"),
            _characteristic("setting", "mixed"),
        ],
    },
)


def _bp_case(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, PRESSURES, "Observation", query, expected, note=note)


CASES: tuple[SearchCase, ...] = (
    _bp_case(
        "composite-component-same-component",
        "component-code-value-quantity=http://loinc.org|8480-6$lt100",
        ("bp-low",),
        f"the code and the value must be in the same component: bp-high's diastolic 80 is "
        f"< 100 but its systolic is 120 ({COMPOSITE}, systolic < 60 example)",
    ),
    _bp_case(
        "composite-component-diastolic",
        "component-code-value-quantity=http://loinc.org|8462-4$lt60",
        ("bp-crossed",),
        f"diastolic below 60: only bp-crossed (55); bp-low's 60 is not < 60 ({COMPOSITE})",
    ),
    _bp_case(
        "composite-component-gt",
        "component-code-value-quantity=http://loinc.org|8480-6$gt125",
        ("bp-crossed",),
        f"systolic above 125 ({COMPOSITE})",
    ),
    _bp_case(
        "composite-component-full-quantity",
        "component-code-value-quantity=http://loinc.org|8480-6"
        "$120|http://unitsofmeasure.org|mm[Hg]",
        ("bp-high",),
        f"the quantity half may carry system and code ({COMPOSITE}, result.code-value-quantity "
        f"example)",
    ),
    _bp_case(
        "composite-top-level-code-value",
        "code-value-quantity=http://loinc.org|8480-6$lt60",
        ("sys-55",),
        f"code-value-quantity pairs Observation.code with Observation.value, not components; "
        f"dia-50 has another code ({COMPOSITE})",
    ),
    _bp_case(
        "composite-combo-code-value",
        "combo-code-value-quantity=http://loinc.org|8480-6$lt100",
        ("sys-55", "bp-low"),
        f"combo- pairs code and value either at the top level or within one component "
        f"({COMPOSITE}; Observation-combo-code-value-quantity)",
    ),
    _bp_case(
        "composite-or",
        "component-code-value-quantity=http://loinc.org|8480-6$lt100,http://loinc.org|8462-4$lt60",
        ("bp-low", "bp-crossed"),
        f"a composite value can be OR-ed with ',' like any value ({COMPOSITE}, {MULTI})",
    ),
    _bp_case(
        "composite-and",
        "component-code-value-quantity=http://loinc.org|8480-6$gt100"
        "&component-code-value-quantity=http://loinc.org|8462-4$gt70",
        ("bp-high",),
        f"two composites ANDed: systolic > 100 and diastolic > 70; bp-crossed's diastolic is 55 "
        f"({COMPOSITE}, {MULTI})",
    ),
    SearchCase(
        name="composite-code-value-concept",
        fixtures=CONCEPTS,
        resource_type="Observation",
        query="code-value-concept=http://loinc.org|94500-6$http://snomed.info/sct|260373001",
        expected=("cv-pos",),
        note=f"token$token: cv-other has the same value under another code ({COMPOSITE})",
    ),
    SearchCase(
        name="composite-code-value-string",
        fixtures=STRINGS,
        resource_type="Observation",
        query="code-value-string=http://example.org/codes|note$positive",
        expected=("cs-a",),
        note=f"token$string, the string half starts-with and case-insensitive; cs-c is "
        f"'Positive' under another code ({COMPOSITE})",
    ),
    SearchCase(
        name="composite-code-value-date",
        fixtures=DATES,
        resource_type="Observation",
        query="code-value-date=http://example.org/codes|onset$ge2020-01-01",
        expected=("cd-onset-2020",),
        note=f"token$date with a prefix on the date half ({COMPOSITE})",
    ),
    SearchCase(
        name="composite-context-type-value",
        fixtures=VALUE_SET_CONTEXTS,
        resource_type="ValueSet",
        query="context-type-value=focus$http://snomed.info/sct|408934002",
        expected=("vsc-focus",),
        note=f"the spec's focus example: vsc-venue has that SNOMED code under 'venue' and another "
        f"code under 'focus' ({COMPOSITE})",
    ),
    SearchCase(
        name="composite-context-type-quantity",
        fixtures=VALUE_SET_CONTEXTS,
        resource_type="ValueSet",
        query="context-type-quantity=age$gt18",
        expected=("vsc-age-65",),
        note=f"token$quantity with a prefix on the quantity half ({COMPOSITE})",
    ),
    SearchCase(
        name="composite-missing-true",
        fixtures=CONCEPTS + STRINGS[:1],
        resource_type="Observation",
        query="code-value-concept:missing=true",
        expected=("cs-a",),
        note=f"a composite is missing unless one item has every component: cs-a has a code "
        f"but a string value, so no code-value-concept pair ({COMPOSITE}; search.html#missing)",
    ),
    SearchCase(
        name="composite-missing-false",
        fixtures=CONCEPTS + STRINGS[:1],
        resource_type="Observation",
        query="code-value-concept:missing=false",
        expected=("cv-neg", "cv-other", "cv-pos"),
        note=f"only Observations with a code and a CodeableConcept value ({COMPOSITE})",
    ),
    SearchCase(
        name="composite-characteristic-value",
        fixtures=GROUPS,
        resource_type="Group",
        query="characteristic-value=gender$mixed",
        expected=("grp-mixed",),
        note=f"the spec's gender$mixed example: grp-crossed has 'gender' and 'mixed' in "
        f"different characteristics ({COMPOSITE})",
    ),
)
