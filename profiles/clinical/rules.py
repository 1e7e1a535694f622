"""Clinical context rules that need other resources.

- rofecare-1904: a prescription is written within a consultation: its ``encounter`` is a
  visit of the same patient that is in progress or finished (DESIGN.md: "a prescription
  only within a consultation"). Checked when the prescription is created or moved to
  another visit, not on every later change: cancelling a prescription must stay possible
  once its visit is closed or cancelled.

A practitioner edits only their own consultations unless supervisor: that rule needs the
writer's identity and lives with the other access checks (``fhir_server/auth/policy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.errors import BusinessRuleViolation
from fhir_server.services.rules import Change, RuleContext, Verdict
from profiles.support import reference

CONSULTATION_STATUSES = ("in-progress", "finished")


@dataclass(frozen=True)
class PrescriptionWithinConsultation:
    code: str = "rofecare-1904"
    title: str = (
        "A prescription belongs to a consultation of its patient that is in progress or finished"
    )
    resource_types: frozenset[str] = frozenset({"MedicationRequest"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        prescription = change.resource
        if prescription is None:
            return
        visit = reference(prescription.get("encounter"))
        if change.previous is not None and visit == reference(change.previous.get("encounter")):
            return
        if visit is None:
            raise self._refusal("A prescription must name its consultation (encounter)")
        encounter = await context.read(visit) if visit.startswith("Encounter/") else None
        if encounter is None:
            raise self._refusal(f"{visit} is not a consultation of this server")
        if encounter.get("status") not in CONSULTATION_STATUSES:
            raise self._refusal(
                f"{visit} is {encounter.get('status')}: a prescription needs a consultation "
                "in progress or finished"
            )
        patient = reference(prescription.get("subject"))
        if reference(encounter.get("subject")) != patient:
            raise self._refusal(f"{visit} is not a consultation of {patient}")

    def _refusal(self, message: str) -> BusinessRuleViolation:
        return BusinessRuleViolation(
            message, rofecare_code=self.code, expression="MedicationRequest.encounter"
        )


RULES = (PrescriptionWithinConsultation(),)
