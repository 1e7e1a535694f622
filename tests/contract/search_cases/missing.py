"""The :missing modifier (search.html#missing, search.html#modifiers).

``[param]:missing=true`` selects resources with no value for the parameter; ``false`` those with
at least one. "Value" means a value the parameter indexes: a Patient with a HumanName but no
given name is missing ``given``, an Observation with a valueString is missing ``value-quantity``.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, SearchCase, observation, patient, quantity, ref

MISSING = f"{SPEC}#missing"
MODIFIERS = f"{SPEC}#modifiers"

NAMES = (
    patient("ms-given", name=[{"family": "Archer", "given": ["Ann"]}]),
    patient("ms-family-only", name=[{"family": "Baker"}]),
    patient("ms-noname", gender="female"),
)

GENDERS = (
    patient("mt-female", gender="female", birthDate="1990"),
    patient("mt-unknown", gender="unknown"),
    patient("mt-none", birthDate="1990-02-03"),
    patient("mt-none-nobirth", active=True),
)

SUBJECTS = (
    {"resourceType": "Patient", "id": "p1"},
    observation("mr-subject", subject=ref("Patient/p1")),
    observation("mr-no-subject"),
)

VALUES = (
    observation("mq-quantity", valueQuantity=quantity(5.4, "mg")),
    observation("mq-string", valueString="5.4 mg"),
    observation(
        "mq-absent",
        dataAbsentReason={
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                    "code": "not-performed",
                }
            ]
        },
    ),
)

EFFECTIVE = (
    observation("me-datetime", effectiveDateTime="2020-01-01T10:00:00Z"),
    observation("me-period", effectivePeriod={"start": "2020-01-01"}),
    observation("me-none"),
)

RISKS = (
    {
        "resourceType": "RiskAssessment",
        "id": "mn-probability",
        "status": "final",
        "subject": ref("Patient/p1"),
        "prediction": [{"probabilityDecimal": 0.2}],
    },
    {
        "resourceType": "RiskAssessment",
        "id": "mn-qualitative",
        "status": "final",
        "subject": ref("Patient/p1"),
        "prediction": [{"qualitativeRisk": {"text": "high"}}],
    },
)

VALUE_SETS = (
    {"resourceType": "ValueSet", "id": "mu-url", "status": "active", "url": "http://x.org/vs"},
    {"resourceType": "ValueSet", "id": "mu-no-url", "status": "draft"},
)

CASES: tuple[SearchCase, ...] = (
    SearchCase(
        name="missing-string-true",
        fixtures=NAMES,
        resource_type="Patient",
        query="given:missing=true",
        expected=("ms-family-only", "ms-noname"),
        note=f"string: no given name anywhere, whether or not there is a HumanName "
        f"({MODIFIERS}, missing)",
    ),
    SearchCase(
        name="missing-string-false",
        fixtures=NAMES,
        resource_type="Patient",
        query="given:missing=false",
        expected=("ms-given",),
        note=f"string: at least one given name ({MODIFIERS}, missing)",
    ),
    SearchCase(
        name="missing-string-family-true",
        fixtures=NAMES,
        resource_type="Patient",
        query="family:missing=true",
        expected=("ms-noname",),
        note=f"string: family present in ms-given and ms-family-only ({MISSING})",
    ),
    SearchCase(
        name="missing-token-true",
        fixtures=GENDERS,
        resource_type="Patient",
        query="gender:missing=true",
        expected=("mt-none", "mt-none-nobirth"),
        note=f"token: 'unknown' is a value, not a missing one ({MISSING})",
    ),
    SearchCase(
        name="missing-token-false",
        fixtures=GENDERS,
        resource_type="Patient",
        query="gender:missing=false",
        expected=("mt-female", "mt-unknown"),
        note=f"token: any gender code ({MISSING})",
    ),
    SearchCase(
        name="missing-date-true",
        fixtures=GENDERS,
        resource_type="Patient",
        query="birthdate:missing=true",
        expected=("mt-unknown", "mt-none-nobirth"),
        note=f"date: no birthDate ({MISSING})",
    ),
    SearchCase(
        name="missing-date-false",
        fixtures=GENDERS,
        resource_type="Patient",
        query="birthdate:missing=false",
        expected=("mt-female", "mt-none"),
        note=f"date: a birthDate of any precision ({MISSING})",
    ),
    SearchCase(
        name="missing-combined-with-value",
        fixtures=GENDERS,
        resource_type="Patient",
        query="gender:missing=true&birthdate=1990",
        expected=("mt-none",),
        note=f":missing ANDs with other parameters like any criterion ({MISSING})",
    ),
    SearchCase(
        name="missing-and-value-same-param",
        fixtures=GENDERS,
        resource_type="Patient",
        query="gender=female&gender:missing=true",
        expected=(),
        note=f"a value and missing=true on one parameter can never both hold (the spec's "
        f"AllergyIntolerance example) ({MISSING})",
    ),
    SearchCase(
        name="missing-reference-true",
        fixtures=SUBJECTS,
        resource_type="Observation",
        query="subject:missing=true",
        expected=("mr-no-subject",),
        note=f"reference: no subject ({MISSING})",
    ),
    SearchCase(
        name="missing-reference-false",
        fixtures=SUBJECTS,
        resource_type="Observation",
        query="subject:missing=false",
        expected=("mr-subject",),
        note=f"reference: a subject reference ({MISSING})",
    ),
    SearchCase(
        name="missing-quantity-true",
        fixtures=VALUES,
        resource_type="Observation",
        query="value-quantity:missing=true",
        expected=("mq-string", "mq-absent"),
        note=f"quantity: a value of another type (valueString) is no quantity ({MISSING})",
    ),
    SearchCase(
        name="missing-quantity-false",
        fixtures=VALUES,
        resource_type="Observation",
        query="value-quantity:missing=false",
        expected=("mq-quantity",),
        note=f"quantity: valueQuantity present ({MISSING})",
    ),
    SearchCase(
        name="missing-date-choice-types",
        fixtures=EFFECTIVE,
        resource_type="Observation",
        query="date:missing=true",
        expected=("me-none",),
        note=f"date over effective[x]: a Period with only a start is a value ({MISSING})",
    ),
    SearchCase(
        name="missing-number-true",
        fixtures=RISKS,
        resource_type="RiskAssessment",
        query="probability:missing=true",
        expected=("mn-qualitative",),
        note=f"number: a prediction without probability ({MISSING})",
    ),
    SearchCase(
        name="missing-uri-true",
        fixtures=VALUE_SETS,
        resource_type="ValueSet",
        query="url:missing=true",
        expected=("mu-no-url",),
        note=f"uri: no url ({MISSING})",
    ),
    SearchCase(
        name="missing-uri-false",
        fixtures=VALUE_SETS,
        resource_type="ValueSet",
        query="url:missing=false",
        expected=("mu-url",),
        note=f"uri: url present ({MISSING})",
    ),
)
