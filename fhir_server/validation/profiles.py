"""Profile validation on the write path, in the mode the hospital chose.

``enforce`` (the default) refuses a resource that breaks a profile with 422 and every
fault (https://hl7.org/fhir/R4/http.html#2.21.0.17: "the proposed resource violated
applicable FHIR profiles or server business rules"); ``warn`` accepts it with the faults as
warnings, which the write path logs (keys and ids, never content: it may be patient data)
and answers to the client, for a migration period while old data is cleaned; ``off``
leaves the R4 structural check alone.
``$validate`` answers what a write would meet: the faults as errors (enforce), as warnings
(warn), none (off); a profile it names explicitly is checked in every mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from fhir_server.errors import Issue, ProfileViolation
from fhir_server.model.outcome import as_warning
from fhir_server.validation.profile_registry import ProfileRegistry

Mode = Literal["enforce", "warn", "off"]


class ProfileValidation:
    def __init__(self, registry: ProfileRegistry, mode: Mode = "enforce") -> None:
        self.registry = registry
        self.mode = mode

    def issues(self, resource: dict[str, Any], asked: Iterable[str] = ()) -> list[Issue]:
        """What ``$validate`` reports: the faults a write would meet in this mode, and
        those against the ``asked`` profiles (errors in every mode)."""
        registry, asked = self.registry, tuple(asked)
        on = self.mode != "off"
        profiles, issues = registry.select(resource, governing=on, declared=on)
        found = registry.check(resource, profiles)
        if self.mode == "warn":
            found = [as_warning(issue) for issue in found]
        extra, extra_issues = registry.select(resource, asked, governing=False, declared=False)
        checked = {profile.url for profile in profiles} if self.mode == "enforce" else set()
        found += extra_issues + registry.check(
            resource, [profile for profile in extra if profile.url not in checked]
        )
        return issues + found

    def enforce(self, resource: dict[str, Any]) -> list[Issue]:
        """Raise 422 with every fault (enforce); else the warnings of the accepted resource:
        the profiles' own (an extensible binding's guidance, a claimed profile this server
        does not know) and, in warn mode, every fault. They are returned rather than logged
        here: the caller knows whether the write then went through, and tells its client
        (a Bundle entry's ``response.outcome``, a line of ``rofecare load``'s report)."""
        if self.mode == "off":
            return []
        issues = self.registry.issues(resource)
        errors = [issue for issue in issues if issue.severity in ("error", "fatal")]
        if errors and self.mode == "enforce":
            raise ProfileViolation(errors[0].diagnostics, issues=issues)
        return [as_warning(issue) for issue in issues if issue.severity != "information"]
