"""Profile validation on the write path, in the mode the hospital chose.

``enforce`` (the default) refuses a resource that breaks a profile with 422 and every
fault (https://hl7.org/fhir/R4/http.html#2.21.0.17: "the proposed resource violated
applicable FHIR profiles or server business rules"); ``warn`` accepts it and logs which
rules it broke (keys and ids, never content: it may be patient data), for a migration
period while old data is cleaned; ``off`` leaves the R4 structural check alone.
``$validate`` answers what a write would meet: the faults as errors (enforce), as warnings
(warn), none (off); a profile it names explicitly is checked in every mode.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, Literal

from fhir_server.errors import Issue, ProfileViolation
from fhir_server.validation.profile_registry import ProfileRegistry

Mode = Literal["enforce", "warn", "off"]
log = logging.getLogger("rofecare.profiles")


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
            found = [
                dataclasses.replace(issue, severity="warning")
                if issue.severity == "error"
                else issue
                for issue in found
            ]
        extra, extra_issues = registry.select(resource, asked, governing=False, declared=False)
        checked = {profile.url for profile in profiles} if self.mode == "enforce" else set()
        found += extra_issues + registry.check(
            resource, [profile for profile in extra if profile.url not in checked]
        )
        return issues + found

    def enforce(self, resource: dict[str, Any]) -> None:
        """Raise 422 with every fault (enforce), or log the broken rules (warn)."""
        if self.mode == "off":
            return
        issues = self.registry.issues(resource)
        errors = [issue for issue in issues if issue.severity in ("error", "fatal")]
        if not errors:
            return
        if self.mode == "enforce":
            raise ProfileViolation(errors[0].diagnostics, issues=issues)
        log.warning(
            "%s/%s accepted although it breaks %s (ROFECARE_PROFILE_VALIDATION=warn)",
            resource.get("resourceType"),
            resource.get("id", "(new)"),
            ", ".join(sorted({issue.key or issue.rofecare_code or "?" for issue in errors})),
        )
