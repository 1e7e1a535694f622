"""The AuditEvents the server writes itself (``fhir_server/events/audit.py``) conform to
the rofecare-audit-event profile that governs every AuditEvent: a profile refusing them
would make every audited write fail once enforcement is on."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.auth.context import Access
from fhir_server.auth.scopes import ScopeSet
from fhir_server.definitions.registry import load_definitions, profile_resources
from fhir_server.events.audit import Entity, login_event, patient_entities, rest_event
from fhir_server.validation.profile_registry import ProfileRegistry
from fhir_server.validation.structure import StructureValidator

PROFILE = "http://rofecare.com/fhir/StructureDefinition/rofecare-audit-event"


@pytest.fixture(scope="module")
def registry() -> ProfileRegistry:
    return ProfileRegistry(profile_resources("StructureDefinition"))


@pytest.fixture(scope="module")
def structure() -> StructureValidator:
    return StructureValidator(load_definitions().resource_types)


def _server_audit_events() -> list[dict[str, Any]]:
    user = Access(
        subject="u1",
        client_id="rofecare-web",
        scopes=ScopeSet.parse("user/*.cruds"),
        username="pmbarga",
        fhir_user="Practitioner/prac-paul-mbarga",
        roles=("physician",),
    )
    backend = Access(subject="lis", client_id="lab-system", scopes=ScopeSet.parse("system/*.rs"))
    recorded = "2026-03-14T09:52:01.204Z"
    return [
        rest_event(
            access=user,
            interaction="create",
            action="C",
            recorded=recorded,
            entities=[Entity("MedicationRequest/rx-1"), *patient_entities(["pat-1"])],
            source_ip="10.12.4.31",
        ),
        rest_event(
            access=backend,
            interaction="search-type",
            action="E",
            recorded=recorded,
            entities=[Entity("Observation/o1")],
            queries=["/Observation?subject=Patient/pat-1"],
        ),
        rest_event(
            access=None,
            interaction="transaction",
            action="E",
            recorded=recorded,
            entities=[],
            outcome="8",
            description="Transaction refused: the MedicationDispense breaks rof-disp-1",
        ),
        login_event(
            username="pmbarga",
            client_id="rofecare-web",
            fhir_user="Practitioner/prac-paul-mbarga",
            recorded=recorded,
            outcome="0",
            description="Password login",
            source_ip="10.12.4.31",
        ),
        login_event(
            username=None,
            client_id="rofecare-web",
            fhir_user=None,
            recorded=recorded,
            outcome="4",
            description="Unknown client credentials",
            source_ip=None,
        ),
        login_event(
            username=None,
            client_id=None,
            fhir_user=None,
            recorded=recorded,
            outcome="4",
            description="Login page: no user, no client",
            source_ip="192.0.2.7",
        ),
    ]


@pytest.mark.parametrize(
    "event",
    _server_audit_events(),
    ids=lambda event: (
        event["outcomeDesc"] if "outcomeDesc" in event else event["subtype"][0]["code"]
    ),
)
def test_the_audit_events_the_server_writes_conform(
    event: dict[str, Any], registry: ProfileRegistry, structure: StructureValidator
) -> None:
    assert structure.validate(event) == []
    assert PROFILE in [profile.url for profile in registry.governing(event)]
    assert [issue for issue in registry.issues(event) if issue.severity == "error"] == []
