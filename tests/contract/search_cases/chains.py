"""Chained parameters (search.html#chaining) and reverse chaining with _has (search.html#has).

A chain ``subject:Patient.name=peter`` selects resources whose subject *resolves* to a Patient
matching ``name=peter``: a reference to a resource that does not exist matches no chain. Without
a type (``subject.name``) every target type that defines the parameter is searched, as HAPI
FHIR does. Each chained parameter is evaluated on its own. ``_has:Type:param:criterion`` selects
resources referred to, through ``param``, by a ``Type`` matching the criterion; _has nests.
"""

from __future__ import annotations

from tests.contract.search_cases import (
    LOINC,
    SPEC,
    SearchCase,
    coding,
    concept,
    observation,
    patient,
    ref,
)

CHAINING = f"{SPEC}#chaining"
HAS = f"{SPEC}#has"
MULTI = f"{SPEC}#combining"

MRN = "http://hospital.example.org/mrn"

CHAIN = (
    {"resourceType": "Organization", "id": "org-acme", "name": "Acme Hospital"},
    {"resourceType": "Organization", "id": "org-beta", "name": "Beta Clinic"},
    patient(
        "ch-peter",
        name=[{"family": "Parker", "given": ["Peter"]}],
        gender="male",
        birthDate="1980-05-15",
        identifier=[{"system": MRN, "value": "111"}],
        managingOrganization=ref("Organization/org-acme"),
    ),
    patient(
        "ch-mary",
        name=[{"family": "Jane", "given": ["Mary"]}],
        gender="female",
        birthDate="1992-07-01",
        managingOrganization=ref("Organization/org-beta"),
    ),
    patient("ch-anon", managingOrganization=ref("Organization/org-acme")),
    {"resourceType": "Location", "id": "loc-peterborough", "name": "Peterborough Clinic"},
    observation("ch-o-peter", subject=ref("Patient/ch-peter")),
    observation("ch-o-mary", subject=ref("Patient/ch-mary")),
    observation("ch-o-anon", subject=ref("Patient/ch-anon")),
    observation("ch-o-loc", subject=ref("Location/loc-peterborough")),
    observation("ch-o-ghost", subject=ref("Patient/ghost")),
    observation("ch-o-nosubj"),
)

PRACTITIONERS = (
    {
        "resourceType": "Practitioner",
        "id": "pr-joe",
        "name": [{"family": "Joe"}],
        "address": [{"state": "CA"}],
    },
    {
        "resourceType": "Practitioner",
        "id": "pr-jane",
        "name": [{"family": "Jane"}],
        "address": [{"state": "MN"}],
    },
    patient(
        "gp-both", generalPractitioner=[ref("Practitioner/pr-joe"), ref("Practitioner/pr-jane")]
    ),
    patient("gp-joe", generalPractitioner=[ref("Practitioner/pr-joe")]),
    patient("gp-jane", generalPractitioner=[ref("Practitioner/pr-jane")]),
)

CODE_A = concept(coding(LOINC, "1234-5"))
CODE_B = concept(coding(LOINC, "9999-9"))

HAS_FIXTURES = (
    patient("hp-1", gender="male"),
    patient("hp-2", gender="female"),
    patient("hp-3", gender="female"),
    {"resourceType": "Group", "id": "hg", "type": "person", "actual": True},
    {"resourceType": "Group", "id": "hg-unused", "type": "person", "actual": True},
    {"resourceType": "Practitioner", "id": "hpr-1"},
    {"resourceType": "Practitioner", "id": "hpr-2"},
    {"resourceType": "Practitioner", "id": "MyUserId"},
    observation("ho-1", CODE_A, subject=ref("Patient/hp-1")),
    observation("ho-2", CODE_B, subject=ref("Patient/hp-2")),
    observation("ho-3", CODE_B, subject=ref("Patient/hp-1")),
    observation("ho-4", CODE_A, subject=ref("Group/hg")),
    {
        "resourceType": "Provenance",
        "id": "pv-1",
        "target": [ref("Observation/ho-2")],
        "recorded": "2020-01-01T10:00:00Z",
        "agent": [{"who": ref("Practitioner/hpr-1")}],
    },
    {
        "resourceType": "Provenance",
        "id": "pv-2",
        "target": [ref("Observation/ho-1")],
        "recorded": "2020-01-01T11:00:00Z",
        "agent": [{"who": ref("Practitioner/hpr-2")}],
    },
    {
        "resourceType": "AuditEvent",
        "id": "ae-1",
        "type": coding("http://dicom.nema.org/resources/ontology/DCM", "110110", "Patient Record"),
        "recorded": "2020-01-01T12:00:00Z",
        "agent": [{"who": ref("Practitioner/MyUserId"), "requestor": True}],
        "source": {"observer": ref("Practitioner/hpr-1")},
        "entity": [{"what": ref("Observation/ho-1")}],
    },
)


def _chain(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, CHAIN, "Observation", query, expected, note=note)


def _has(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, HAS_FIXTURES, "Patient", query, expected, note=note)


CASES: tuple[SearchCase, ...] = (
    _chain(
        "chain-typed",
        "subject:Patient.name=peter",
        ("ch-o-peter",),
        f"subject:Patient.name: subjects that are Patients named peter; the Location "
        f"'Peterborough Clinic' is excluded by the type ({CHAINING})",
    ),
    _chain(
        "chain-untyped-all-targets",
        "subject.name=peter",
        ("ch-o-peter", "ch-o-loc"),
        f"without a type the chain covers every target type defining 'name' (Patient and "
        f"Location here), as HAPI FHIR does ({CHAINING}, advanced search note)",
    ),
    _chain(
        "chain-implicit-type-param",
        "patient.name=mary",
        ("ch-o-mary",),
        f"'patient' only targets Patient, so no type is needed ({CHAINING})",
    ),
    _chain(
        "chain-multi-level",
        "subject:Patient.organization.name=acme",
        ("ch-o-peter", "ch-o-anon"),
        f"chains can be recursive: Observation -> Patient -> Organization ({CHAINING})",
    ),
    _chain(
        "chain-multi-level-other",
        "subject:Patient.organization.name=beta",
        ("ch-o-mary",),
        f"the other organization ({CHAINING})",
    ),
    _chain(
        "chain-ends-in-reference",
        "subject:Patient.organization=Organization/org-beta",
        ("ch-o-mary",),
        f"the last link of a chain can be a reference parameter ({CHAINING})",
    ),
    _chain(
        "chain-token",
        "subject:Patient.identifier=http://hospital.example.org/mrn|111",
        ("ch-o-peter",),
        f"a token at the end of a chain ({CHAINING})",
    ),
    _chain(
        "chain-date",
        "subject:Patient.birthdate=1980",
        ("ch-o-peter",),
        f"a date at the end of a chain ({CHAINING})",
    ),
    _chain(
        "chain-or",
        "subject:Patient.name=peter,mary",
        ("ch-o-peter", "ch-o-mary"),
        f"OR values in a chained parameter ({CHAINING}, {MULTI})",
    ),
    _chain(
        "chain-missing-skips-dangling",
        "subject:Patient.name:missing=true",
        ("ch-o-anon",),
        f"a chain is evaluated on the referenced resource: Patient/ghost does not exist, so "
        f"ch-o-ghost matches nothing, not even name:missing=true ({CHAINING})",
    ),
    _chain(
        "chain-not-skips-dangling",
        "subject:Patient.gender:not=male",
        ("ch-o-mary", "ch-o-anon"),
        f":not inside a chain applies to existing Patients; a dangling reference has no "
        f"Patient to test ({CHAINING})",
    ),
    SearchCase(
        name="chain-independent-evaluation",
        fixtures=PRACTITIONERS,
        resource_type="Patient",
        query="general-practitioner.name=joe&general-practitioner.address-state=MN",
        expected=("gp-both",),
        note=f"chained parameters are applied independently: Joe is in CA, Jane in MN, and "
        f"gp-both has both, although no one practitioner satisfies both ({CHAINING})",
    ),
    _has(
        "has-simple",
        "_has:Observation:patient:code=1234-5",
        ("hp-1",),
        f"patients referred to by an Observation with code 1234-5 through 'patient'; ho-4's "
        f"Group subject is no patient ({HAS})",
    ),
    _has(
        "has-or",
        "_has:Observation:patient:code=1234-5,9999-9",
        ("hp-1", "hp-2"),
        f"'Or' searches are allowed in _has ({HAS})",
    ),
    _has(
        "has-and-independent",
        "_has:Observation:patient:code=1234-5&_has:Observation:patient:code=9999-9",
        ("hp-1",),
        f"each _has is processed independently: hp-1 has one Observation of each code ({HAS})",
    ),
    _has(
        "has-with-other-param",
        "gender=female&_has:Observation:patient:code=9999-9",
        ("hp-2",),
        f"_has combines with ordinary parameters ({HAS})",
    ),
    SearchCase(
        name="has-on-group",
        fixtures=HAS_FIXTURES,
        resource_type="Group",
        query="_has:Observation:subject:code=1234-5",
        expected=("hg",),
        note=f"_has through 'subject' finds the Group that an Observation refers to ({HAS})",
    ),
    _has(
        "has-nested-provenance",
        "_has:Observation:subject:_has:Provenance:target:agent=Practitioner/hpr-1",
        ("hp-2",),
        f"_has can be chained: patients with an Observation whose Provenance agent is hpr-1 "
        f"({HAS})",
    ),
    _has(
        "has-nested-audit-event",
        "_has:Observation:patient:_has:AuditEvent:entity:agent=MyUserId",
        ("hp-1",),
        f"the spec's own nested example, with a bare id for the agent reference ({HAS})",
    ),
)
