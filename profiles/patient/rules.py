"""Patient context rules that need other resources (DESIGN.md, "The seed's invariants").

- rofecare-1901: a medical record number (an identifier typed v2-0203 MR) belongs to one
  patient per identifier system;
- rofecare-1902: a patient has at most one active inpatient admission;
- rofecare-1903: a visit's patient and practitioners are resources of this server.

The first two are claims (``Claim``): each Patient holds a key per medical record number,
each active admission a key for its patient, and the store checks them again inside the
write transaction, so of two simultaneous registrations of one MRN, or two simultaneous
admissions of one patient, exactly one wins, on SQLite and on MongoDB alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import BusinessRuleViolation, Conflict
from fhir_server.services.rules import Change, Claim, RuleContext, Verdict
from profiles.support import codings, reference

IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
# v3 ActCode inpatient classes (IMP and its specializations, acute and non-acute).
INPATIENT_CLASSES = ("IMP", "ACUTE", "NONAC")
# An admission is active from arrival to discharge (https://hl7.org/fhir/R4/valueset-encounter-status.html).
ACTIVE_STATUSES = ("arrived", "triaged", "in-progress", "onleave")
PARTICIPANT_TYPES = ("Practitioner", "PractitionerRole")


def medical_record_numbers(patient: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(index, system, value) of each MR identifier with both a system and a value."""
    found = []
    for index, identifier in enumerate(patient.get("identifier") or []):
        if not isinstance(identifier, dict):
            continue
        if (IDENTIFIER_TYPE, "MR") not in set(codings(identifier.get("type"))):
            continue
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and isinstance(value, str):
            found.append((index, system, value))
    return found


def holding(number: tuple[str, str]) -> Callable[[dict[str, Any]], bool]:
    """Does a patient hold this (system, value) medical record number?"""
    return lambda patient: number in {(s, v) for _, s, v in medical_record_numbers(patient)}


def medical_record_claim(system: str, value: str) -> str:
    return f"patient-mrn:{system}|{value}"


@dataclass(frozen=True)
class UniqueMedicalRecordNumber:
    code: str = "rofecare-1901"
    title: str = "A medical record number (MR identifier) belongs to one patient per system"
    resource_types: frozenset[str] = frozenset({"Patient"})
    guarded: bool = True  # the store checks its claims in the write transaction

    def claims(self, resource: dict[str, Any]) -> list[str]:
        return [medical_record_claim(s, v) for _, s, v in medical_record_numbers(resource)]

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        if change.resource is None:
            return
        for index, system, value in medical_record_numbers(change.resource):
            key = medical_record_claim(system, value)
            holders = await context.claimed(change, key, holding((system, value)))
            message = (
                f"The medical record number {system}|{value} already belongs to another patient"
            )
            if holders:
                raise Conflict(
                    f"{message} (Patient/{holders[0].get('id')})",
                    rofecare_code=self.code,
                    expression=f"Patient.identifier[{index}]",
                )
            verdict.claims.append(Claim(key, self.code, message))


def is_active_admission(encounter: dict[str, Any]) -> bool:
    klass = encounter.get("class")
    inpatient = isinstance(klass, dict) and klass.get("code") in INPATIENT_CLASSES
    return inpatient and encounter.get("status") in ACTIVE_STATUSES


def admitted_patient(encounter: dict[str, Any]) -> str | None:
    """The patient (``Patient/id``) an active inpatient admission holds, else None."""
    if not is_active_admission(encounter):
        return None
    patient = reference(encounter.get("subject"))
    return patient if patient is not None and patient.startswith("Patient/") else None


def admission_claim(patient: str) -> str:
    return f"admission:{patient}"


@dataclass(frozen=True)
class OneActiveAdmission:
    code: str = "rofecare-1902"
    title: str = "A patient has at most one active inpatient admission"
    resource_types: frozenset[str] = frozenset({"Encounter"})
    guarded: bool = True  # the store checks its claims in the write transaction

    def claims(self, resource: dict[str, Any]) -> list[str]:
        patient = admitted_patient(resource)
        return [admission_claim(patient)] if patient is not None else []

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        encounter = change.resource
        patient = admitted_patient(encounter) if encounter is not None else None
        if patient is None:
            return
        key = admission_claim(patient)
        others = await context.claimed(
            change, key, lambda other: admitted_patient(other) == patient
        )
        message = f"{patient} already has an active inpatient admission"
        if others:
            raise Conflict(
                f"{message} (Encounter/{others[0].get('id')}): discharge it first",
                rofecare_code=self.code,
                expression="Encounter.status",
            )
        verdict.claims.append(Claim(key, self.code, message))


@dataclass(frozen=True)
class VisitParties:
    code: str = "rofecare-1903"
    title: str = "A visit's patient and practitioners are resources of this server"
    resource_types: frozenset[str] = frozenset({"Encounter"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        encounter = change.resource
        if encounter is None:
            return
        subject = reference(encounter.get("subject"))
        if subject is not None and await _missing(context, subject, ("Patient", "Group")):
            raise BusinessRuleViolation(
                f"Encounter.subject names {subject}, which is not a patient of this server",
                rofecare_code=self.code,
                expression="Encounter.subject",
            )
        for index, participant in enumerate(encounter.get("participant") or []):
            individual = reference(participant.get("individual")) if participant else None
            if individual is not None and await _missing(context, individual, PARTICIPANT_TYPES):
                raise BusinessRuleViolation(
                    f"Encounter.participant[{index}].individual names {individual}, which is "
                    "not a practitioner of this server",
                    rofecare_code=self.code,
                    expression=f"Encounter.participant[{index}].individual",
                )


async def _missing(context: RuleContext, target: str, types: tuple[str, ...]) -> bool:
    """A relative reference to one of ``types`` that resolves to nothing current here.
    Absolute references (another server's) and others' types are not this rule's."""
    resource_type = target.split("/", 1)[0]
    if "://" in target or target.count("/") != 1 or resource_type not in types:
        return False
    return await context.read(target) is None


RULES = (UniqueMedicalRecordNumber(), OneActiveAdmission(), VisitParties())
