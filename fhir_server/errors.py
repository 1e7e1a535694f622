"""One exception hierarchy for every fault a client can cause or meet.

Each error carries the HTTP status, the FHIR issue type
(https://hl7.org/fhir/R4/valueset-issue-type.html), a stable Rofecare code
(``rofecare-NNNN``, what tests and clients match on) and, where there is one, the FHIRPath
expression of the faulty element. One handler in ``api`` renders them as OperationOutcome.
"""

from __future__ import annotations

# Re-exported: callers raise errors and build issues from one module.
from fhir_server.model.outcome import Issue as Issue
from fhir_server.model.outcome import Severity as Severity


class FhirError(Exception):
    """Base of every error rendered to a client as an OperationOutcome."""

    status: int = 400
    issue_type: str = "processing"
    rofecare_code: str = "rofecare-1000"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: str | None = None,
        rofecare_code: str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        if rofecare_code:
            self.rofecare_code = rofecare_code
        self.headers = headers or {}
        self.issues = issues or [
            Issue(
                severity="error",
                code=self.issue_type,
                diagnostics=diagnostics,
                rofecare_code=self.rofecare_code,
                expression=(expression,) if expression else (),
            )
        ]


class BadRequest(FhirError):
    status, issue_type, rofecare_code = 400, "invalid", "rofecare-1400"


class InvalidResource(BadRequest):
    """The body is not a structurally valid FHIR R4 resource (http.html: 400)."""

    issue_type, rofecare_code = "structure", "rofecare-1401"


class Unauthorized(FhirError):
    """No valid credentials (RFC 6750 section 3): the client should obtain a token."""

    status, issue_type, rofecare_code = 401, "login", "rofecare-3401"


class Forbidden(FhirError):
    """Valid credentials that do not grant this access (RFC 6750 insufficient_scope)."""

    status, issue_type, rofecare_code = 403, "forbidden", "rofecare-3403"


class NotFound(FhirError):
    status, issue_type, rofecare_code = 404, "not-found", "rofecare-1404"


class MethodNotAllowed(FhirError):
    status, issue_type, rofecare_code = 405, "not-supported", "rofecare-1405"


class NotAcceptable(FhirError):
    status, issue_type, rofecare_code = 406, "not-supported", "rofecare-1406"


class Conflict(FhirError):
    status, issue_type, rofecare_code = 409, "conflict", "rofecare-1409"


class Gone(FhirError):
    status, issue_type, rofecare_code = 410, "deleted", "rofecare-1410"


class PreconditionFailed(FhirError):
    status, issue_type, rofecare_code = 412, "conflict", "rofecare-1412"


class PayloadTooLarge(FhirError):
    status, issue_type, rofecare_code = 413, "too-costly", "rofecare-1413"


class UnsupportedMediaType(FhirError):
    status, issue_type, rofecare_code = 415, "not-supported", "rofecare-1415"


class Unprocessable(FhirError):
    """Well-formed but breaks a profile or business rule (http.html: 422)."""

    status, issue_type, rofecare_code = 422, "processing", "rofecare-1422"


class ProfileViolation(Unprocessable):
    """The resource breaks a profile that governs it or that it claims (http.html: 422)."""

    issue_type, rofecare_code = "invariant", "rofecare-1801"


class BusinessRuleViolation(Unprocessable):
    """The write breaks a hospital rule that needs other resources to check (http.html: 422)."""

    issue_type, rofecare_code = "business-rule", "rofecare-1900"


class StoreUnavailable(FhirError):
    status, issue_type, rofecare_code = 503, "transient", "rofecare-1510"


class SearchTooLong(FhirError):
    """A search ran past the configured time limit and was stopped (never a hung worker)."""

    status, issue_type, rofecare_code = 503, "too-costly", "rofecare-2120"
