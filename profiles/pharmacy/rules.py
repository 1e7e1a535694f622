"""Pharmacy context rules that need other resources (DESIGN.md, "The seed's invariants").

- rofecare-1914: dispensing needs a valid, unexpired prescription: every authorizing
  MedicationRequest of a dispense being prepared, under way or completed is an active
  order of the same patient whose validity period has not ended when the medication is
  handed over (or prepared, or now).
- rofecare-1915: an expired batch is never dispensed: the Medication a dispense hands out
  has no batch whose expiration date is before the day it is handed over.

Both are checked when a dispense is created or its status, prescriptions, medication or
dates change; a completed dispense is history, and correcting its note must stay possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.errors import BusinessRuleViolation
from fhir_server.model.instant import now_utc
from fhir_server.services.rules import Change, RuleContext, Verdict
from profiles.support import period, reference

DISPENSING = ("preparation", "in-progress", "completed")
WATCHED = (
    "status",
    "authorizingPrescription",
    "medicationReference",
    "whenHandedOver",
    "whenPrepared",
    "subject",
)


def handed_over(dispense: dict[str, Any]) -> datetime:
    """When the medication leaves the pharmacy: handed over, else prepared, else now."""
    for key in ("whenHandedOver", "whenPrepared"):
        found = period(dispense.get(key))
        if found is not None:
            return found[0]
    return now_utc()


def changed(change: Change) -> bool:
    before, after = change.previous, change.resource
    if before is None or after is None:
        return True
    return any(before.get(key) != after.get(key) for key in WATCHED)


@dataclass(frozen=True)
class DispenseOnValidPrescription:
    code: str = "rofecare-1914"
    title: str = "A dispense needs a valid, unexpired prescription of its patient"
    resource_types: frozenset[str] = frozenset({"MedicationDispense"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        dispense = change.resource
        if dispense is None or dispense.get("status") not in DISPENSING or not changed(change):
            return
        prescriptions = [reference(item) for item in dispense.get("authorizingPrescription") or []]
        if not any(prescriptions):
            raise self._refusal("A dispense names the prescription it fills", "")
        when = handed_over(dispense)
        patient = reference(dispense.get("subject"))
        for index, target in enumerate(prescriptions):
            where = f"[{index}]"
            order = await context.read(target) if target else None
            if order is None or order.get("resourceType") != "MedicationRequest":
                raise self._refusal(f"{target} is not a prescription of this server", where)
            if order.get("status") != "active" or order.get("intent") not in ("order", None):
                raise self._refusal(
                    f"{target} is {order.get('status')}: only an active order is dispensed", where
                )
            if patient is not None and reference(order.get("subject")) != patient:
                raise self._refusal(f"{target} is another patient's prescription", where)
            validity = (order.get("dispenseRequest") or {}).get("validityPeriod") or {}
            end = period(validity.get("end"))
            if end is not None and end[1] <= when:
                raise self._refusal(f"{target} expired on {validity['end']}", where)
            start = period(validity.get("start"))
            if start is not None and when < start[0]:
                raise self._refusal(f"{target} is valid only from {validity['start']}", where)

    def _refusal(self, message: str, index: str) -> BusinessRuleViolation:
        return BusinessRuleViolation(
            message,
            rofecare_code=self.code,
            expression=f"MedicationDispense.authorizingPrescription{index}",
        )


@dataclass(frozen=True)
class NoExpiredBatchDispensed:
    code: str = "rofecare-1915"
    title: str = "An expired batch is never dispensed"
    resource_types: frozenset[str] = frozenset({"MedicationDispense"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        dispense = change.resource
        if dispense is None or dispense.get("status") not in DISPENSING or not changed(change):
            return
        target = reference(dispense.get("medicationReference"))
        medication = await context.read(target) if target else None
        if medication is None:
            return
        expiry = period((medication.get("batch") or {}).get("expirationDate"))
        when = handed_over(dispense)
        if expiry is not None and expiry[1] <= when:
            lot = (medication.get("batch") or {}).get("lotNumber", "?")
            raise BusinessRuleViolation(
                f"{target} (lot {lot}) expired on {medication['batch']['expirationDate']}: "
                "it cannot be dispensed",
                rofecare_code=self.code,
                expression="MedicationDispense.medicationReference",
            )


RULES = (DispenseOnValidPrescription(), NoExpiredBatchDispensed())
