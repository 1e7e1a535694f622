"""Token parameters (search.html#token): code, system|code, |code, system|, and the modifiers.

Tokens match literally on CodeableConcept (any coding), Coding, Identifier, code, boolean and
ContactPoint. ``:not`` negates the whole set of values and so includes resources with none;
``:text`` is a string match (starts-with, case-insensitive) on CodeableConcept.text and
Coding.display; ``:of-type`` matches Identifier.type plus value.
"""

from __future__ import annotations

from tests.contract.search_cases import (
    LOINC,
    SPEC,
    Resource,
    SearchCase,
    coding,
    concept,
    observation,
    patient,
)

TOKEN = f"{SPEC}#token"
MODIFIERS = f"{SPEC}#modifiers"
MULTI = f"{SPEC}#combining"
ESCAPING = f"{SPEC}#escaping"

LOCAL = "http://example.org/codes"
MRN = "http://hospital.example.org/mrn"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

CODES = (
    observation(
        "tk-loinc",
        concept(coding(LOINC, "8867-4", "Heart rate"), text="Pulse rate"),
    ),
    observation("tk-other-sys", concept(coding(LOCAL, "8867-4", "Local heart rate"))),
    observation("tk-no-sys", concept(coding(None, "8867-4"))),
    observation("tk-bp", concept(coding(LOINC, "85354-9", "Blood pressure panel"))),
    observation(
        "tk-multi",
        concept(
            coding(LOCAL, "hb"),
            coding(LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"),
            text="Hb",
        ),
    ),
    observation("tk-text-only", concept(text="Heart rhythm irregular")),
)


def _mrn(value: str, type_code: str | None = None, system: str | None = MRN) -> Resource:
    identifier: Resource = {"value": value}
    if system is not None:
        identifier["system"] = system
    if type_code is not None:
        identifier["type"] = concept(coding(V2_0203, type_code))
    return identifier


PATIENTS = (
    patient(
        "tp-f",
        gender="female",
        active=True,
        identifier=[_mrn("12345", "MR")],
        telecom=[
            {"system": "phone", "value": "+15550100"},
            {"system": "email", "value": "ann@example.org"},
        ],
    ),
    patient(
        "tp-m",
        gender="male",
        active=False,
        identifier=[_mrn("12345", "MRT", system="http://other.example.org/ids")],
        telecom=[{"system": "email", "value": "bob@example.org"}],
    ),
    patient("tp-o", gender="other", active=True, identifier=[_mrn("67890", "MR")]),
    patient("tp-none", identifier=[_mrn("12345", system=None)]),
    patient("tp-u", gender="unknown", identifier=[_mrn("A|B", system="http://example.org/ids")]),
    patient("tp-a", identifier=[_mrn("A", system="http://example.org/ids")]),
)

COMMA_IDS = (
    patient("id-1-2", identifier=[{"system": "http://example.org/ids", "value": "1,2"}]),
    patient("id-1", identifier=[{"system": "http://example.org/ids", "value": "1"}]),
    patient("id-2", identifier=[{"system": "http://example.org/ids", "value": "2"}]),
)

ENCOUNTERS = (
    {
        "resourceType": "Encounter",
        "id": "en-amb",
        "status": "finished",
        "class": coding(ACT_CODE, "AMB", "ambulatory"),
    },
    {
        "resourceType": "Encounter",
        "id": "en-imp",
        "status": "in-progress",
        "class": coding(ACT_CODE, "IMP", "inpatient encounter"),
    },
    {
        "resourceType": "Encounter",
        "id": "en-local",
        "status": "finished",
        "class": coding(LOCAL, "AMB"),
    },
)

STATUSES = (
    observation("st-final"),
    {**observation("st-amended"), "status": "amended"},
    {**observation("st-prelim"), "status": "preliminary"},
)

CASES: tuple[SearchCase, ...] = (
    SearchCase(
        name="token-code-any-system",
        fixtures=CODES,
        resource_type="Observation",
        query="code=8867-4",
        expected=("tk-loinc", "tk-other-sys", "tk-no-sys"),
        note=f"[code] matches Coding.code irrespective of the system ({TOKEN})",
    ),
    SearchCase(
        name="token-system-and-code",
        fixtures=CODES,
        resource_type="Observation",
        query="code=http://loinc.org|8867-4",
        expected=("tk-loinc",),
        note=f"[system]|[code] needs both to match the same Coding ({TOKEN})",
    ),
    SearchCase(
        name="token-code-without-system",
        fixtures=CODES,
        resource_type="Observation",
        query="code=|8867-4",
        expected=("tk-no-sys",),
        note=f"|[code] matches only a Coding that has no system ({TOKEN})",
    ),
    SearchCase(
        name="token-system-any-code",
        fixtures=CODES,
        resource_type="Observation",
        query="code=http://loinc.org|",
        expected=("tk-loinc", "tk-bp", "tk-multi"),
        note=f"[system]| matches any code in the system ({TOKEN})",
    ),
    SearchCase(
        name="token-any-coding-of-concept",
        fixtures=CODES,
        resource_type="Observation",
        query="code=http://loinc.org|718-7",
        expected=("tk-multi",),
        note=f"a CodeableConcept matches on any of its codings, here the second ({TOKEN})",
    ),
    SearchCase(
        name="token-url-encoded-value",
        fixtures=CODES,
        resource_type="Observation",
        query="code=http%3A%2F%2Floinc.org%7C8867-4",
        expected=("tk-loinc",),
        note=f"percent-encoding ('%7C' for '|') is undone before the token is parsed ({ESCAPING})",
    ),
    SearchCase(
        name="token-or-comma",
        fixtures=CODES,
        resource_type="Observation",
        query="code=http://loinc.org|85354-9,http://example.org/codes|hb",
        expected=("tk-bp", "tk-multi"),
        note=f"comma-separated tokens are OR ({MULTI})",
    ),
    SearchCase(
        name="token-and-repeated",
        fixtures=CODES,
        resource_type="Observation",
        query="code=http://example.org/codes|hb&code=http://loinc.org|718-7",
        expected=("tk-multi",),
        note=f"repeated parameter is AND: only tk-multi has both codings ({MULTI})",
    ),
    SearchCase(
        name="token-not-system-code",
        fixtures=CODES,
        resource_type="Observation",
        query="code:not=http://loinc.org|8867-4",
        expected=("tk-other-sys", "tk-no-sys", "tk-bp", "tk-multi", "tk-text-only"),
        note=f":not returns every resource without a matching value, including tk-text-only "
        f"which has no coding at all ({MODIFIERS})",
    ),
    SearchCase(
        name="token-not-applies-to-set",
        fixtures=CODES,
        resource_type="Observation",
        query="code:not=718-7",
        expected=("tk-loinc", "tk-other-sys", "tk-no-sys", "tk-bp", "tk-text-only"),
        note=f":not negates the set: tk-multi is excluded although its other coding 'hb' is "
        f"not 718-7 ({MODIFIERS})",
    ),
    SearchCase(
        name="token-text-display-and-text",
        fixtures=CODES,
        resource_type="Observation",
        query="code:text=heart",
        expected=("tk-loinc", "tk-text-only"),
        note=f":text is a string search on Coding.display ('Heart rate') or CodeableConcept.text "
        f"('Heart rhythm irregular') ({TOKEN}, modifier table)",
    ),
    SearchCase(
        name="token-text-concept-text",
        fixtures=CODES,
        resource_type="Observation",
        query="code:text=pulse",
        expected=("tk-loinc",),
        note=f":text matches CodeableConcept.text 'Pulse rate' ({TOKEN})",
    ),
    SearchCase(
        name="token-text-case-insensitive",
        fixtures=CODES,
        resource_type="Observation",
        query="code:text=HEMOGLOBIN",
        expected=("tk-multi",),
        note=f":text functions as a normal string search: case-insensitive ({TOKEN})",
    ),
    SearchCase(
        name="token-text-starts-with-only",
        fixtures=CODES,
        resource_type="Observation",
        query="code:text=rate",
        expected=(),
        note=f":text is starts-with, not contains: 'Heart rate' does not match 'rate' "
        f"({TOKEN}; R5 text-advanced is what matches words inside)",
    ),
    SearchCase(
        name="token-code-element",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="gender=female",
        expected=("tp-f",),
        note=f"a token on a 'code' element matches the code ({TOKEN})",
    ),
    SearchCase(
        name="token-code-element-or",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="gender=female,other",
        expected=("tp-f", "tp-o"),
        note=f"OR of codes ({MULTI})",
    ),
    SearchCase(
        name="token-not-includes-missing",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="gender:not=male",
        expected=("tp-f", "tp-o", "tp-none", "tp-u", "tp-a"),
        note=f"gender:not=male includes patients with no gender at all ({MODIFIERS}, :not)",
    ),
    SearchCase(
        name="token-boolean-true",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="active=true",
        expected=("tp-f", "tp-o"),
        note=f"boolean elements are searched as the codes true/false ({TOKEN})",
    ),
    SearchCase(
        name="token-boolean-false",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="active=false",
        expected=("tp-m",),
        note=f"active=false matches an explicit false only, not an absent element ({TOKEN})",
    ),
    SearchCase(
        name="token-boolean-not",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="active:not=true",
        expected=("tp-m", "tp-none", "tp-u", "tp-a"),
        note=f":not=true includes false and absent ({MODIFIERS})",
    ),
    SearchCase(
        name="token-identifier-system-value",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="identifier=http://hospital.example.org/mrn|12345",
        expected=("tp-f",),
        note=f"Identifier: system|value ({TOKEN})",
    ),
    SearchCase(
        name="token-identifier-value-any-system",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="identifier=12345",
        expected=("tp-f", "tp-m", "tp-none"),
        note=f"Identifier value in any system, or none ({TOKEN})",
    ),
    SearchCase(
        name="token-identifier-no-system",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="identifier=|12345",
        expected=("tp-none",),
        note=f"|value matches an Identifier without system ({TOKEN})",
    ),
    SearchCase(
        name="token-identifier-system-any-value",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="identifier=http://hospital.example.org/mrn|",
        expected=("tp-f", "tp-o"),
        note=f"system| matches any Identifier in the system ({TOKEN})",
    ),
    SearchCase(
        name="token-identifier-of-type",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345",
        expected=("tp-f",),
        note=f":of-type is type-system|type-code|value: tp-m has 12345 with type MRT, tp-o has "
        f"type MR with 67890 ({MODIFIERS}, of-type)",
    ),
    SearchCase(
        name="token-contactpoint-telecom",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="telecom=ann@example.org",
        expected=("tp-f",),
        note=f"ContactPoint is searched on its value, [code] form only ({TOKEN})",
    ),
    SearchCase(
        name="token-contactpoint-phone-plus",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="phone=%2B15550100",
        expected=("tp-f",),
        note=f"'+' in a value must be sent as %2B (a raw '+' is a space in a query string); "
        f"'phone' is telecom where system=phone ({TOKEN})",
    ),
    SearchCase(
        name="token-contactpoint-email-system",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="email=bob@example.org,%2B15550100",
        expected=("tp-m",),
        note=f"'email' only covers telecom with system=email, so the phone number matches nothing "
        f"({TOKEN}; expression of individual-email)",
    ),
    SearchCase(
        name="token-escaped-pipe",
        fixtures=PATIENTS,
        resource_type="Patient",
        query="identifier=http://example.org/ids|A\\|B",
        expected=("tp-u",),
        note=f"'\\|' is a literal '|' in the value: value 'A|B', not value 'A' ({ESCAPING})",
    ),
    SearchCase(
        name="token-escaped-comma",
        fixtures=COMMA_IDS,
        resource_type="Patient",
        query="identifier=1\\,2",
        expected=("id-1-2",),
        note=f"'\\,' is a literal comma: one value '1,2' ({ESCAPING})",
    ),
    SearchCase(
        name="token-unescaped-comma-is-or",
        fixtures=COMMA_IDS,
        resource_type="Patient",
        query="identifier=1,2",
        expected=("id-1", "id-2"),
        note=f"an unescaped comma is OR of '1' and '2' ({ESCAPING})",
    ),
    SearchCase(
        name="token-coding-system-code",
        fixtures=ENCOUNTERS,
        resource_type="Encounter",
        query="class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB",
        expected=("en-amb",),
        note=f"a token on a Coding element (Encounter.class) ({TOKEN})",
    ),
    SearchCase(
        name="token-coding-code-only",
        fixtures=ENCOUNTERS,
        resource_type="Encounter",
        query="class=AMB",
        expected=("en-amb", "en-local"),
        note=f"a Coding matched by code in any system ({TOKEN})",
    ),
    SearchCase(
        name="token-status-or",
        fixtures=STATUSES,
        resource_type="Observation",
        query="status=final,amended",
        expected=("st-final", "st-amended"),
        note=f"OR on a required code element ({MULTI})",
    ),
)
