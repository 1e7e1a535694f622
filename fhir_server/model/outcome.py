"""OperationOutcome builders (https://hl7.org/fhir/R4/operationoutcome.html)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    severity: Severity
    code: str
    diagnostics: str
    rofecare_code: str | None = None
    expression: tuple[str, ...] = field(default_factory=tuple)
    key: str | None = None  # the profile rule broken: a constraint key, or kind:element id
    demoted: bool = False  # a fault accepted as a warning (warn mode); not in the JSON


def as_warning(issue: Issue) -> Issue:
    """``issue``, no longer refusing: what ROFECARE_PROFILE_VALIDATION=warn makes of a fault."""
    if issue.severity in ("error", "fatal"):
        return replace(issue, severity="warning", demoted=True)
    return issue


ROFECARE_CODE_SYSTEM = "http://rofecare.com/fhir/CodeSystem/outcome-code"
CONSTRAINT_KEY_SYSTEM = "http://rofecare.com/fhir/CodeSystem/constraint-key"


def issue_json(issue: Issue) -> dict[str, Any]:
    entry: dict[str, Any] = {"severity": issue.severity, "code": issue.code}
    codings = []
    if issue.rofecare_code:
        codings.append({"system": ROFECARE_CODE_SYSTEM, "code": issue.rofecare_code})
    if issue.key:
        codings.append({"system": CONSTRAINT_KEY_SYSTEM, "code": issue.key})
    if codings:
        entry["details"] = {"coding": codings}
    entry["diagnostics"] = issue.diagnostics
    if issue.expression:
        entry["expression"] = list(issue.expression)
    return entry


def operation_outcome(issues: list[Issue], *, request_id: str | None = None) -> dict[str, Any]:
    outcome: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "issue": [issue_json(issue) for issue in issues],
    }
    if request_id:
        outcome["id"] = request_id
    return outcome


def informational(diagnostics: str, rofecare_code: str | None = None) -> Issue:
    return Issue("information", "informational", diagnostics, rofecare_code=rofecare_code)


def information(diagnostics: str, rofecare_code: str | None = None) -> dict[str, Any]:
    """An all-is-well OperationOutcome, e.g. for ``Prefer: return=OperationOutcome``."""
    return operation_outcome([informational(diagnostics, rofecare_code)])
