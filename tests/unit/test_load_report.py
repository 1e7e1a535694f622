"""A line of the load report names why an entry failed."""

from __future__ import annotations

from fhir_server.errors import ProfileViolation
from fhir_server.model.outcome import Issue
from fhir_server.services.load_report import outcome_fields


def test_the_reason_is_the_first_error_not_a_warning_before_it() -> None:
    """A Synthea Condition refused by a hospital rule: the warning that its US Core profile
    is unknown comes first in the OperationOutcome, the refusal after it."""
    unknown = Issue(
        "warning",
        "not-supported",
        "Profile http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition is not "
        "known to this server; it was not checked",
        "rofecare-1805",
        ("Condition.meta.profile[0]",),
    )
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
