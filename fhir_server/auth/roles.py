"""Rofecare's hospital roles and the SMART scopes each one permits.

A user's roles bound what any token issued to them can do: the authorization server grants
``scopes_of(user.roles).grant(requested)`` (see ``ScopeSet.grant``). Scopes are SMART v2
``user/`` scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html);
resource types follow the seed-model mapping in DESIGN.md ("Mapping of the seed model to
FHIR R4").

Principles:

- Least privilege: each role gets the types its desk works with, read-only where it only
  consults.
- Every role that reads patient data also reads Patient, Practitioner, PractitionerRole,
  Organization and Location (who, by whom, where), so references resolve.
- Nobody but admin deletes. FHIR retires records by status instead (``entered-in-error``,
  ``inactive``, ``cancelled``), which keeps references valid, and every version is kept
  anyway (https://hl7.org/fhir/R4/http.html#delete). Even the Medication catalogue, owned
  by the pharmacy, is retired with ``Medication.status = inactive``, because prescriptions
  and dispensings keep referring to it.
- AuditEvent is append-only: the server writes it in the same transaction as the change it
  records. Nobody is given update or delete on it; admin's ``user/*.cruds`` covers it on
  paper only, and the write path refuses AuditEvent update/delete whatever the scopes say.
  Provenance (signatures) is written by the server too, so only the auditor reads it.
- Scopes name resource types, not profiles or categories. Where two desks share a type,
  the policy layer narrows further: ``Basic`` holds both pharmacy stock items and cashier
  sessions (told apart by ``Basic.code``); lab and imaging both write ``DiagnosticReport``
  and ``Observation`` (told apart by ``category``). Granular v2 scopes
  (``?category=laboratory``) would express this once supported.
- Supervision (editing another practitioner's consultations, a seed invariant) is not a
  scope: it is the ``supervises_consultations`` flag, held by supervisor-physician and admin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fhir_server.auth.scopes import ScopeSet

ROLE_NAMES: tuple[str, ...] = (
    "admin",
    "physician",
    "supervisor-physician",
    "nurse",
    "receptionist",
    "pharmacist",
    "biologist",
    "radiologist",
    "cashier",
    "auditor",
)


@dataclass(frozen=True)
class Role:
    """A hospital role: who holds it, and what it permits."""

    name: str
    description: str  # one sentence: who holds it in a hospital
    scopes: ScopeSet  # what it permits, as SMART v2 user/ scopes
    supervises_consultations: bool = False  # true for supervisor-physician and admin only


def _user(*entries: str) -> ScopeSet:
    """``"Patient.rs"`` -> ``user/Patient.rs``, parsed (so a typo fails at import)."""
    return ScopeSet.parse(" ".join(f"user/{entry}" for entry in entries))


# Who, by whom, where: needed by every role that handles patient data.
_DIRECTORY = (
    "Patient.rs",
    "Practitioner.rs",
    "PractitionerRole.rs",
    "Organization.rs",
    "Location.rs",
)

_PHYSICIAN = _user(
    *_DIRECTORY,
    # Consultations, diagnoses, prescriptions, plans, history, orders, notes.
    "Encounter.crus",
    "Condition.crus",
    "Observation.crus",
    "MedicationRequest.crus",
    "CarePlan.crus",
    "Goal.crus",
    "AllergyIntolerance.crus",
    "Procedure.crus",
    "FamilyMemberHistory.crus",
    "ServiceRequest.crus",
    "ClinicalImpression.crus",
    "Immunization.crus",
    "DocumentReference.crus",
    "Binary.cr",  # attachments of the documents they write
    "Communication.crus",
    "CommunicationRequest.crus",
    # Results and what others did for the patient.
    "DiagnosticReport.rs",
    "ImagingStudy.rs",
    "Media.rs",
    "Specimen.rs",
    "MedicationDispense.rs",
    "MedicationAdministration.rs",
    # Reference data and the agenda.
    "RelatedPerson.rs",
    "Medication.rs",
    "Appointment.rs",
    "Schedule.rs",
    "Slot.rs",
    "Device.rs",
)

_ROLES: tuple[Role, ...] = (
    Role(
        "admin",
        "The hospital's system administrators, who manage users, reference data and configuration.",
        _user("*.cruds"),
        supervises_consultations=True,
    ),
    Role(
        "physician",
        "Doctors who consult, diagnose, prescribe, order tests and plan treatment.",
        _PHYSICIAN,
    ),
    Role(
        "supervisor-physician",
        "Senior doctors (heads of department) who may also edit the consultations of the "
        "physicians they supervise.",
        _PHYSICIAN,
        supervises_consultations=True,
    ),
    Role(
        "nurse",
        "Nurses who triage, take vital signs, give medications and follow care plans on the wards.",
        _user(
            *_DIRECTORY,
            # Not "c": visits and admissions are opened at the registration desk (and
            # consultations by physicians), so each encounter has one door and is billed
            # once; triage sets Encounter.priority, bed moves update Encounter.location.
            "Encounter.rus",
            "Observation.crus",  # vital signs, triage score
            "MedicationAdministration.crus",
            "AllergyIntolerance.crus",  # allergies reported at intake: a safety record
            "Immunization.crus",
            "DocumentReference.crus",  # nursing notes
            "Communication.crs",
            "MedicationRequest.rs",
            "Condition.rs",
            "CarePlan.rs",
            "Goal.rs",
            "Procedure.rs",
            "ServiceRequest.rs",
            "Specimen.rs",
            "DiagnosticReport.rs",
            "ImagingStudy.rs",
            "RelatedPerson.rs",
            "Medication.rs",
            "Appointment.rs",
        ),
    ),
    Role(
        "receptionist",
        "Front-desk and admissions staff who register patients, open visits and admissions "
        "and book appointments.",
        _user(
            "Patient.crus",  # registration; no delete, duplicates are merged or deactivated
            "Practitioner.rs",
            "PractitionerRole.rs",
            "Organization.rs",
            "Location.rs",
            "RelatedPerson.crus",  # emergency contacts
            "Encounter.crus",  # visits, admissions, transfers, discharges
            "Appointment.crus",
            "Slot.crus",
            "Schedule.crus",
            "Coverage.crus",  # insurance taken at registration
        ),
    ),
    Role(
        "pharmacist",
        "Pharmacists who validate prescriptions, dispense medications and manage the "
        "pharmacy stock and orders.",
        _user(
            *_DIRECTORY,
            "MedicationRequest.rs",  # prescriptions are the physicians' to write
            "AllergyIntolerance.rs",
            "Medication.crus",  # the catalogue; retired by status, never deleted
            "MedicationDispense.crus",
            "SupplyDelivery.crus",  # stock movements
            "SupplyRequest.crus",  # purchase orders
            "Basic.crus",  # stock items (Rofecare profile)
        ),
    ),
    Role(
        "biologist",
        "Clinical laboratory biologists who receive samples, record and validate lab results.",
        _user(
            *_DIRECTORY,
            "ServiceRequest.rs",
            "Specimen.crus",
            "Observation.crus",
            "DiagnosticReport.crus",
            "Device.rs",
        ),
    ),
    Role(
        "radiologist",
        "Radiologists who perform and report imaging examinations.",
        _user(
            *_DIRECTORY,
            "ServiceRequest.rs",
            "ImagingStudy.crus",  # mostly created by the DICOM door, corrected here
            "DiagnosticReport.crus",
            "Media.crus",
            "Device.rs",
        ),
    ),
    Role(
        "cashier",
        "Billing and cash-desk staff who invoice acts, take payments and close the register.",
        _user(
            *_DIRECTORY,
            "ChargeItem.crus",
            "ChargeItemDefinition.rs",  # tariffs are set by admin
            "Invoice.crus",
            "PaymentReconciliation.crus",
            "PaymentNotice.crus",
            "Account.crus",
            "Coverage.rs",
            "Claim.crus",
            "ClaimResponse.rs",  # written by the insurer
            "Basic.crus",  # cash sessions and daily closing (Rofecare profiles)
        ),
    ),
    Role(
        "auditor",
        "Compliance and data-protection officers who review who did what, and nothing else.",
        _user("AuditEvent.rs", "Provenance.rs"),
    ),
)

ROLES: Mapping[str, Role] = MappingProxyType({r.name: r for r in _ROLES})


def role(name: str) -> Role:
    """The role named ``name``; KeyError naming it and the known roles otherwise."""
    try:
        return ROLES[name]
    except KeyError:
        raise KeyError(f"unknown role {name!r}; known roles: {', '.join(ROLE_NAMES)}") from None


def scopes_of(names: Iterable[str]) -> ScopeSet:
    """The union of the named roles' scopes (a user may hold several roles)."""
    result = ScopeSet()
    for name in names:
        result = result.union(role(name).scopes)
    return result
