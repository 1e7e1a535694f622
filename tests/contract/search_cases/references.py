"""Reference parameters (search.html#reference): Type/id, id, absolute URL, :Type, :identifier.

A relative reference ``Patient/p1`` is matched by ``Patient/p1``, by ``p1`` and by
``subject:Patient=p1``; an absolute reference to another server is matched only by its URL.
A versioned reference ``Patient/p1/_history/2`` still refers to Patient p1 (search works on
current versions; HAPI FHIR indexes the reference without its version). ``:identifier`` searches
Reference.identifier as a token and never looks into the referenced resource.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, SearchCase, observation, patient, ref

REFERENCE = f"{SPEC}#reference"
MODIFIERS = f"{SPEC}#modifiers"
VERSIONS = f"{SPEC}#versions"
MULTI = f"{SPEC}#combining"

MRN = "http://hospital.example.org/mrn"

SUBJECTS = (
    patient("p1", identifier=[{"system": MRN, "value": "12345"}]),
    patient("p2", identifier=[{"system": MRN, "value": "67890"}]),
    {"resourceType": "Group", "id": "g1", "type": "person", "actual": True},
    {"resourceType": "Practitioner", "id": "pr1"},
    observation("rf-p1", subject=ref("Patient/p1")),
    observation("rf-p2", subject=ref("Patient/p2")),
    observation("rf-g1", subject=ref("Group/g1")),
    observation("rf-abs", subject=ref("http://other.example.org/fhir/Patient/p1")),
    observation("rf-ver", subject=ref("Patient/p1/_history/2")),
    observation(
        "rf-ident",
        subject={"identifier": {"system": MRN, "value": "12345"}, "display": "Peter"},
    ),
    observation(
        "rf-both",
        subject={"reference": "Patient/p2", "identifier": {"system": MRN, "value": "67890"}},
    ),
    observation("rf-none"),
    observation("rf-perf", subject=ref("Patient/p2"), performer=[ref("Practitioner/pr1")]),
)

QUESTIONNAIRE = "http://example.org/fhir/Questionnaire/intake"

CANONICALS = (
    {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-intake",
        "status": "completed",
        "questionnaire": QUESTIONNAIRE,
    },
    {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-intake-extended",
        "status": "completed",
        "questionnaire": f"{QUESTIONNAIRE}-extended",
    },
    {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-other",
        "status": "completed",
        "questionnaire": "http://example.org/fhir/Questionnaire/discharge",
    },
)


def _subject_case(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, SUBJECTS, "Observation", query, expected, note=note)


CASES: tuple[SearchCase, ...] = (
    _subject_case(
        "reference-type-and-id",
        "subject=Patient/p1",
        ("rf-p1", "rf-ver"),
        f"[type]/[id] matches the relative reference, and the versioned one to the same "
        f"patient; the absolute URL of another server does not ({REFERENCE}, {VERSIONS})",
    ),
    _subject_case(
        "reference-bare-id",
        "subject=p1",
        ("rf-p1", "rf-ver"),
        f"[id] alone matches a local reference of any type with that id ({REFERENCE})",
    ),
    _subject_case(
        "reference-type-modifier",
        "subject:Patient=p1",
        ("rf-p1", "rf-ver"),
        f"subject:Patient=p1 is the same as subject=Patient/p1 ({MODIFIERS}, [type])",
    ),
    _subject_case(
        "reference-type-modifier-group",
        "subject:Group=g1",
        ("rf-g1",),
        f"the [type] modifier restricts the target type ({MODIFIERS}, [type])",
    ),
    _subject_case(
        "reference-type-modifier-wrong-type",
        "subject:Group=p1",
        (),
        f"no Group has id p1: subject:Group=p1 matches nothing ({MODIFIERS}, [type])",
    ),
    _subject_case(
        "reference-absolute-other-server",
        "subject=http://other.example.org/fhir/Patient/p1",
        ("rf-abs",),
        f"an absolute URL matches that URL only, not the local Patient/p1 ({REFERENCE})",
    ),
    _subject_case(
        "reference-or",
        "subject=Patient/p1,Group/g1",
        ("rf-p1", "rf-ver", "rf-g1"),
        f"OR of references ({MULTI})",
    ),
    _subject_case(
        "reference-patient-param-excludes-group",
        "patient=p1,g1",
        ("rf-p1", "rf-ver"),
        f"'patient' is subject.where(resolve() is Patient): a Group reference never matches "
        f"({REFERENCE}, implicitly limited scope)",
    ),
    _subject_case(
        "reference-identifier-modifier",
        "subject:identifier=http://hospital.example.org/mrn|12345",
        ("rf-ident",),
        f":identifier matches Reference.identifier only; rf-p1 points to a Patient holding "
        f"that identifier but its Reference has none ({MODIFIERS}, identifier)",
    ),
    _subject_case(
        "reference-identifier-value-only",
        "subject:identifier=67890",
        ("rf-both",),
        f":identifier is a token search, so a bare value matches in any system ({REFERENCE})",
    ),
    _subject_case(
        "reference-with-identifier-by-reference",
        "subject=Patient/p2",
        ("rf-p2", "rf-both", "rf-perf"),
        f"a Reference carrying both reference and identifier matches by reference ({REFERENCE})",
    ),
    _subject_case(
        "reference-other-parameter",
        "performer=Practitioner/pr1",
        ("rf-perf",),
        f"a reference parameter on a repeating element ({REFERENCE})",
    ),
    SearchCase(
        name="reference-canonical-exact",
        fixtures=CANONICALS,
        resource_type="QuestionnaireResponse",
        query=f"questionnaire={QUESTIONNAIRE}",
        expected=("qr-intake",),
        note=f"a canonical is searched by its whole URL: '...intake' is not '...intake-extended' "
        f"({REFERENCE}, [url])",
    ),
    SearchCase(
        name="reference-canonical-or",
        fixtures=CANONICALS,
        resource_type="QuestionnaireResponse",
        query=f"questionnaire={QUESTIONNAIRE},http://example.org/fhir/Questionnaire/discharge",
        expected=("qr-intake", "qr-other"),
        note=f"OR of canonical URLs ({MULTI})",
    ),
)
