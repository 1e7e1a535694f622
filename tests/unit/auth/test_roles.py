"""Rofecare's roles: least privilege, append-only audit, and who supervises."""

from __future__ import annotations

import pytest

from fhir_server.auth.roles import ROLE_NAMES, ROLES, Role, role, scopes_of
from fhir_server.auth.scopes import ScopeSet

DIRECTORY = ("Patient", "Practitioner", "PractitionerRole", "Organization", "Location")


@pytest.mark.parametrize("name", ROLE_NAMES)
def test_every_role_exists_with_a_description_and_scopes(name: str) -> None:
    found = role(name)
    assert isinstance(found, Role)
    assert found.name == name
    assert found.description.strip().endswith(".")
    assert found.scopes.resource_scopes
    for scope in found.scopes.resource_scopes:
        assert scope.context == "user"
    # every scope round-trips through the parser
    assert ScopeSet.parse(str(found.scopes)) == found.scopes


def test_role_names_and_definitions_agree() -> None:
    assert tuple(ROLES) == ROLE_NAMES


@pytest.mark.parametrize("name", [n for n in ROLE_NAMES if n != "admin"])
def test_nobody_but_admin_updates_or_deletes_audit_events(name: str) -> None:
    scopes = role(name).scopes
    assert not scopes.allows("AuditEvent", "u")
    assert not scopes.allows("AuditEvent", "d")
    assert not scopes.allows("AuditEvent", "c")


@pytest.mark.parametrize("name", [n for n in ROLE_NAMES if n != "admin"])
def test_nobody_but_admin_deletes_anything(name: str) -> None:
    assert all("d" not in scope.interactions for scope in role(name).scopes.resource_scopes)


def test_admin_has_everything_on_paper() -> None:
    assert str(role("admin").scopes) == "user/*.cruds"


def test_auditor_reads_audit_events_and_provenance_only() -> None:
    assert str(role("auditor").scopes) == "user/AuditEvent.rs user/Provenance.rs"
    assert not role("auditor").scopes.allows("Patient", "r")


@pytest.mark.parametrize("name", [n for n in ROLE_NAMES if n not in ("admin", "auditor")])
def test_patient_data_roles_read_the_directory(name: str) -> None:
    scopes = role(name).scopes
    for resource_type in DIRECTORY:
        assert scopes.allows(resource_type, "r"), resource_type
        assert scopes.allows(resource_type, "s"), resource_type


# (role, resource type, interaction, allowed)
PERMISSIONS = [
    ("receptionist", "Observation", "r", False),
    ("receptionist", "Condition", "r", False),
    ("receptionist", "Patient", "c", True),
    ("receptionist", "Patient", "u", True),
    ("receptionist", "Patient", "d", False),
    ("receptionist", "Encounter", "c", True),
    ("receptionist", "Appointment", "c", True),
    ("cashier", "Condition", "r", False),
    ("cashier", "Observation", "r", False),
    ("cashier", "Invoice", "c", True),
    ("cashier", "ChargeItemDefinition", "u", False),
    ("physician", "MedicationRequest", "c", True),
    ("physician", "Condition", "u", True),
    ("physician", "DiagnosticReport", "r", True),
    ("physician", "DiagnosticReport", "c", False),
    ("physician", "Patient", "r", True),
    ("physician", "Patient", "c", False),
    ("supervisor-physician", "MedicationRequest", "c", True),
    ("pharmacist", "MedicationRequest", "c", False),
    ("pharmacist", "MedicationRequest", "r", True),
    ("pharmacist", "MedicationDispense", "c", True),
    ("pharmacist", "Medication", "d", False),
    ("pharmacist", "Observation", "r", False),
    ("nurse", "Encounter", "c", False),
    ("nurse", "Encounter", "u", True),
    ("nurse", "Observation", "c", True),
    ("nurse", "MedicationAdministration", "c", True),
    ("nurse", "MedicationRequest", "c", False),
    ("biologist", "DiagnosticReport", "c", True),
    ("biologist", "Specimen", "u", True),
    ("biologist", "ServiceRequest", "c", False),
    ("radiologist", "ImagingStudy", "u", True),
    ("radiologist", "MedicationRequest", "r", False),
    ("auditor", "Provenance", "u", False),
]


@pytest.mark.parametrize(("name", "resource_type", "interaction", "allowed"), PERMISSIONS)
def test_permissions(name: str, resource_type: str, interaction: str, allowed: bool) -> None:
    assert role(name).scopes.allows(resource_type, interaction) is allowed


def test_supervisor_physician_is_physician_plus_supervision() -> None:
    assert role("supervisor-physician").scopes == role("physician").scopes


def test_only_admin_and_supervisor_physician_supervise() -> None:
    supervisors = {name for name in ROLE_NAMES if role(name).supervises_consultations}
    assert supervisors == {"admin", "supervisor-physician"}


def test_unknown_role_is_a_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="surgeon"):
        role("surgeon")
    with pytest.raises(KeyError, match="surgeon"):
        scopes_of(["nurse", "surgeon"])


def test_scopes_of_is_the_union() -> None:
    both = scopes_of(["receptionist", "cashier"])
    assert both == role("receptionist").scopes.union(role("cashier").scopes)
    assert both.allows("Patient", "c")
    assert both.allows("Invoice", "c")
    assert not both.allows("Condition", "r")
    assert scopes_of([]) == ScopeSet()


def test_roles_bound_a_token_request() -> None:
    granted = scopes_of(["pharmacist"]).grant(
        ScopeSet.parse("openid user/MedicationRequest.cruds user/Medication.cruds")
    )
    assert str(granted) == "openid user/Medication.crus user/MedicationRequest.rs"
