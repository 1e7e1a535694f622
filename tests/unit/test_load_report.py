"""A line of the load report names why an entry failed, or what it was loaded despite."""

from __future__ import annotations

from fhir_server.errors import ProfileViolation
from fhir_server.model.outcome import Issue
from fhir_server.services.load_report import outcome_fields, warning_record
from fhir_server.services.load_sources import Unit

UNKNOWN_PROFILE = Issue(
    "warning",
    "not-supported",
    "Profile http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition is not "
    "known to this server; it was not checked",
    "rofecare-1805",
    ("Condition.meta.profile[0]",),
)


def test_the_reason_is_the_first_error_not_a_warning_before_it() -> None:
    """A Synthea Condition refused by a hospital rule: the warning that its US Core profile
    is unknown comes first in the OperationOutcome, the refusal after it."""
    unknown = UNKNOWN_PROFILE
    refused = Issue(
        "error",
        "invariant",
        "A diagnosis must be coded in ICD-10",
        "rofecare-1801",
        ("Condition.code.coding",),
    )
    error = ProfileViolation("refused", issues=[unknown, refused])
    fields = outcome_fields(error)
    assert fields["code"] == "rofecare-1801"
    assert fields["issue"] == "invariant"
    assert fields["diagnostics"] == "A diagnosis must be coded in ICD-10"
    assert fields["expression"] == ["Condition.meta.profile[0]", "Condition.code.coding"]
    assert fields["status"] == 422


def test_an_outcome_of_warnings_only_still_names_its_first_issue() -> None:
    only = Issue("warning", "informational", "something to know")
    fields = outcome_fields(ProfileViolation("refused", issues=[only]))
    assert fields["diagnostics"] == "something to know"


def test_a_warning_line_leads_with_what_is_broken_and_keeps_every_key() -> None:
    """A Synthea Observation loaded in warn mode: the unknown US Core profile (not checked)
    comes first among its warnings, but the line leads with the rule it breaks, where it is
    in its file, and lists every key."""
    broken = Issue(
        "warning",
        "invariant",
        "A final lab result names the biologist who performed it",
        "rofecare-1801",
        ("Observation.performer",),
        key="rof-lr-1",
    )
    observation = {"resourceType": "Observation", "id": "o1"}
    unit = Unit(
        "archive/patient.json",
        0,
        "key",
        {"resourceType": "Bundle", "type": "transaction", "entry": [{}, {"resource": observation}]},
        positions=(7, 12),
    )
    line = warning_record(unit, (0, 1), 1, 201, [UNKNOWN_PROFILE, broken])
    assert line == {
        "file": "archive/patient.json",
        "entry": 12,
        "resource": "Observation/o1",
        "severity": "warning",
        "status": 201,
        "code": "rofecare-1801",
        "issue": "invariant",
        "keys": ["rof-lr-1", "rofecare-1805"],
        "diagnostics": "A final lab result names the biologist who performed it",
        "expression": ["Condition.meta.profile[0]", "Observation.performer"],
    }
