"""AuditEvent resources: who did what to which record, from where, and how it ended.

Shaped after IHE Basic Audit Log Patterns (BALP, https://profiles.ihe.net/ITI/BALP/) on R4
AuditEvent (https://hl7.org/fhir/R4/auditevent.html): ``type`` rest or user
authentication, ``subtype`` the RESTful interaction, the user (with the Practitioner they
are) and the client app as agents, the source address, and the patient whose data was
touched as an entity with the role Patient, so ``AuditEvent?patient=X`` answers "who saw
or changed this patient's record". Built here once for every door.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

from fhir_server.auth.context import Access

Action = Literal["C", "R", "U", "D", "E"]
Outcome = Literal["0", "4", "8", "12"]  # success, minor failure, serious failure, major

REST_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
LOGIN_TYPE = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110114",
    "display": "User Authentication",
}
LOGIN_SUBTYPE = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110122",
    "display": "Login",
}
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
USER_SYSTEM = "urn:rofecare:user"
CLIENT_SYSTEM = "urn:rofecare:client"
MAX_ENTITIES = 1_000  # a transaction of more entries names its first 1,000 and says so
MAX_QUERIES = 100
ACTIONS: dict[str, Action] = {
    "POST": "C",
    "PUT": "U",
    "PATCH": "U",
    "DELETE": "D",
    "GET": "R",
}


class Entity(NamedTuple):
    """A resource or patient an event names (a tuple: a read audit makes one per resource
    read, and a frozen dataclass cost several times as much to create)."""

    reference: str  # "Patient/123"
    is_patient: bool = False


def rest_event(
    *,
    access: Access | None,
    interaction: str,
    action: Action,
    recorded: str,
    entities: Iterable[Entity],
    outcome: Outcome = "0",
    description: str | None = None,
    queries: Sequence[str] = (),
    source_ip: str | None = None,
    observer: str = "Rofecare",
) -> dict[str, Any]:
    """One RESTful interaction, a transaction, a denied request, or the reads of one
    requestor within one flush of the audit queue (``entities`` and ``queries`` list them
    all)."""
    event = _base(REST_TYPE, access, action, recorded, outcome, description, source_ip, observer)
    event["subtype"] = [{"system": INTERACTION_SYSTEM, "code": interaction}]
    items = _entities(entities)
    for query in queries[:MAX_QUERIES]:
        items.append(
            {
                "type": SYSTEM_OBJECT,
                "role": QUERY_ROLE,
                "query": base64.b64encode(query.encode()[:4096]).decode(),
            }
        )
    if items:
        event["entity"] = items
    return event


def login_event(
    *,
    username: str | None,
    client_id: str | None,
    fhir_user: str | None,
    recorded: str,
    outcome: Outcome,
    description: str,
    source_ip: str | None,
    observer: str = "Rofecare",
) -> dict[str, Any]:
    """A login attempt (password grant, login page, refresh token reuse)."""
    agents: list[dict[str, Any]] = []
    if username is not None or fhir_user is not None:
        agents.append(_user_agent(username, fhir_user, None, source_ip))
    if client_id is not None:
        agents.append(_client_agent(client_id, requestor=not agents, source_ip=source_ip))
    if not agents:
        agents.append(_anonymous_agent(source_ip))
    return {
        "resourceType": "AuditEvent",
        "type": LOGIN_TYPE,
        "subtype": [LOGIN_SUBTYPE],
        "action": "E",
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": description[:1000],
        "agent": agents,
        "source": _source(observer),
    }


def _base(
    kind: dict[str, str],
    access: Access | None,
    action: Action,
    recorded: str,
    outcome: Outcome,
    description: str | None,
    source_ip: str | None,
    observer: str,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": kind,
        "action": action,
        "recorded": recorded,
        "outcome": outcome,
        "agent": _agents(access, source_ip),
        "source": _source(observer),
    }
    if description:
        event["outcomeDesc"] = description[:1000]
    return event


def _agents(access: Access | None, source_ip: str | None) -> list[dict[str, Any]]:
    if access is None:
        return [_server_agent(source_ip)]
    if access.username is None and access.fhir_user is None:
        return [_client_agent(access.client_id, requestor=True, source_ip=source_ip)]
    return [
        _user_agent(access.username, access.fhir_user, access.subject, source_ip),
        _client_agent(access.client_id, requestor=False, source_ip=None),
    ]


def _user_agent(
    username: str | None, fhir_user: str | None, user_id: str | None, source_ip: str | None
) -> dict[str, Any]:
    who: dict[str, Any] = (
        {"reference": fhir_user}
        if fhir_user
        else {"identifier": {"system": USER_SYSTEM, "value": username or "unknown"}}
    )
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                    "code": "humanuser",
                    "display": "human user",
                }
            ]
        },
        "who": who,
        "requestor": True,
    }
    if username:
        agent["name"] = username
    if user_id:
        agent["altId"] = user_id
    return _with_network(agent, source_ip)


def _client_agent(client_id: str, *, requestor: bool, source_ip: str | None) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "110150",
                    "display": "Application",
                }
            ]
        },
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}},
        "name": client_id,
        "requestor": requestor,
    }
    return _with_network(agent, source_ip)


def _server_agent(source_ip: str | None) -> dict[str, Any]:
    """No access context: the server itself (a command-line tool, or authentication off)."""
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "110153",
                    "display": "Source Role ID",
                }
            ]
        },
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": "rofecare-server"}},
        "name": "Rofecare (no access token: command-line tool or authentication off)",
        "requestor": True,
    }
    return _with_network(agent, source_ip)


def _anonymous_agent(source_ip: str | None) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "who": {"display": "unauthenticated client"},
        "requestor": True,
    }
    return _with_network(agent, source_ip)


def _with_network(agent: dict[str, Any], source_ip: str | None) -> dict[str, Any]:
    if source_ip:
        agent["network"] = {"address": source_ip[:100], "type": "2"}
    return agent


def _source(observer: str) -> dict[str, Any]:
    return {
        "observer": {"display": observer},
        "type": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }
        ],
    }


def _entities(entities: Iterable[Entity]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    # One entity per reference; a Patient read or written is the patient entity itself.
    merged: dict[str, bool] = {}
    for reference, is_patient in entities:
        merged[reference] = merged.get(reference, False) or is_patient
    for reference, is_patient in merged.items():
        if len(items) == MAX_ENTITIES:
            items.append({"type": SYSTEM_OBJECT, "description": "more not listed"})
            break
        # The codings are shared by every entity: events are serialized, never changed.
        if is_patient:
            items.append({"what": {"reference": reference}, "type": PERSON, "role": PATIENT_ROLE})
        else:
            items.append(
                {"what": {"reference": reference}, "type": SYSTEM_OBJECT, "role": RESOURCE_ROLE}
            )
    return items


def _entity_type(code: str, display: str) -> dict[str, str]:
    return {
        "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
        "code": code,
        "display": display,
    }


def _entity_role(code: str, display: str) -> dict[str, str]:
    return {
        "system": "http://terminology.hl7.org/CodeSystem/object-role",
        "code": code,
        "display": display,
    }


PERSON = _entity_type("1", "Person")
SYSTEM_OBJECT = _entity_type("2", "System Object")
PATIENT_ROLE = _entity_role("1", "Patient")
RESOURCE_ROLE = _entity_role("4", "Domain Resource")
QUERY_ROLE = _entity_role("24", "Query")


def patient_entities(patients: Sequence[str]) -> list[Entity]:
    return [Entity(f"Patient/{patient}", is_patient=True) for patient in patients]
