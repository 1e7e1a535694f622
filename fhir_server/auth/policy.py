"""Enforcement: what the current access may do, asked by the services at every door.

The checks live below the HTTP layer (DESIGN.md, "One write path", step 1: authorize), so a
transaction entry, an ``$operation``, an ``_include`` and a plain REST read are held to the
same scopes. Interactions map to SMART v2 letters
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-fhir-resources):
create ``c``, read and vread ``r``, update and patch ``u``, delete ``d``, search and
history ``s``.

``patient/`` scopes confine access to the launch patient's compartment (the R4 Patient
CompartmentDefinition): searches get a compartment criterion added, so results are
filtered by the store rather than checked one by one; single reads and writes check the
resource's references. Resource types outside the Patient compartment (Medication,
Organization, ...) hold no patient's data and are not narrowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from fhir_server.auth.context import Access, current_access
from fhir_server.auth.roles import role
from fhir_server.definitions.registry import load_patient_compartment
from fhir_server.errors import Forbidden, MethodNotAllowed
from fhir_server.search.plan import Chain, CompartmentMatch, Has, IdMatch, Not, SearchPlan, Where

Interaction = Literal["create", "read", "update", "delete", "search"]
LETTERS: dict[Interaction, str] = {
    "create": "c",
    "read": "r",
    "update": "u",
    "delete": "d",
    "search": "s",
}
APPEND_ONLY = frozenset({"AuditEvent"})


def require(resource_type: str, interaction: Interaction) -> Access | None:
    """The current access if it may do ``interaction`` on ``resource_type`` (None: no
    request context, the server itself); 403 otherwise."""
    access = current_access()
    if access is None:
        return None
    contexts = access.scopes.contexts_for(resource_type, LETTERS[interaction])
    if not contexts:
        raise Forbidden(
            f"The access token does not grant {interaction} on {resource_type} "
            f"(a scope such as user/{resource_type}.{LETTERS[interaction]} is needed)",
            rofecare_code="rofecare-3403",
        )
    if contexts == {"patient"} and access.patient is None:
        raise Forbidden(
            f"patient/ scopes on {resource_type} need a patient context (launch/patient)",
            rofecare_code="rofecare-3404",
        )
    return access


def confining_patient(resource_type: str, interaction: Interaction) -> str | None:
    """The patient whose compartment bounds this access, when only ``patient/`` scopes
    grant it (``require`` has passed); None when it is not confined."""
    access = current_access()
    if access is None or access.patient is None:
        return None
    contexts = access.scopes.contexts_for(resource_type, LETTERS[interaction])
    if contexts != {"patient"}:
        return None
    if resource_type not in ("Patient", "*") and resource_type not in load_patient_compartment():
        return None  # not patient data (Medication, Organization...): not narrowed
    return access.patient


def confine_plan(plan: SearchPlan) -> SearchPlan:
    """Check ``search`` on every type ``plan`` searches, and on every type its chained and
    ``_has`` parameters search inside it (a receptionist must not find Patients by their
    Conditions); under ``patient/`` scopes narrow each of those searches to the launch
    patient's compartment.

    A system search over several types adds, per confined type, that type's compartment
    links. ``plan.resource_types`` empty means every type: then the token needs a ``*``
    search scope."""
    types = plan.resource_types or ("*",)
    for resource_type in types:
        require(resource_type, "search")
    _require_inner(plan.where)
    access = current_access()
    if access is None or access.patient is None:
        return plan
    where = _confine_inner(plan.where, access.patient)
    confined = [kind for kind in types if confining_patient(kind, "search") is not None]
    if confined:
        if len(confined) != len(types):
            # Mixed: confined and unconfined types in one system search. Narrow everything
            # rather than split the search; unconfined types then find nothing of theirs.
            confined = list(types)
        where = (_membership(confined, access.patient), *where)
    return replace(plan, where=where)


def _require_inner(where: Where) -> None:
    for alternatives in where:
        for predicate in alternatives:
            if isinstance(predicate, Chain):
                require(predicate.target_type, "search")
                _require_inner(predicate.where)
            elif isinstance(predicate, Has):
                require(predicate.source_type, "search")
                _require_inner(predicate.where)
            elif isinstance(predicate, Not):
                _require_inner((predicate.alternatives,))


def _confine_inner(where: Where, patient: str) -> Where:
    """``where`` with every chained and ``_has`` search on a confined type narrowed to the
    patient's compartment too (else ``Practitioner?_has:Observation:performer:subject=...``
    would tell a patient app about another patient's Observations)."""

    def narrowed(predicate: Any) -> Any:
        if isinstance(predicate, Chain):
            inner = _confine_inner(predicate.where, patient)
            if confining_patient(predicate.target_type, "search") is not None:
                inner = (_membership([predicate.target_type], patient), *inner)
            return replace(predicate, where=inner)
        if isinstance(predicate, Has):
            inner = _confine_inner(predicate.where, patient)
            if confining_patient(predicate.source_type, "search") is not None:
                inner = (_membership([predicate.source_type], patient), *inner)
            return replace(predicate, where=inner)
        if isinstance(predicate, Not):
            return replace(
                predicate, alternatives=tuple(narrowed(item) for item in predicate.alternatives)
            )
        return predicate

    return tuple(tuple(narrowed(predicate) for predicate in group) for group in where)


def _membership(types: Sequence[str], patient: str) -> tuple[Any, ...]:
    """Resources of ``types`` in the patient's compartment. The Patient itself is matched by
    id only when Patient is the one type searched: an id match cannot name its type, and
    ``Observation/{patient id}`` of another patient must not slip in with it."""
    links = load_patient_compartment()
    alternatives: list[Any] = []
    if list(types) == ["Patient"]:
        alternatives.append(IdMatch((patient,)))
    pairs = tuple(
        (kind, code)
        for kind in (links if "*" in types else types)
        if kind in links
        for code in links[kind]
    )
    if pairs:
        alternatives.append(CompartmentMatch(pairs, "Patient", patient))
    if not alternatives:
        # Nothing of these types can be in the compartment: match nothing.
        alternatives.append(IdMatch(()))
    return tuple(alternatives)


def check_in_compartment(
    resource_type: str,
    resource: Mapping[str, Any] | None,
    references: set[tuple[str, str]],
    interaction: Interaction,
) -> None:
    """For a single read or write under ``patient/`` scopes: the resource must be the
    patient, or reference the patient through a compartment link (``references``: the
    relative references of its compartment parameters, as the indexer reads them). A
    write must moreover name no other patient in those links: the compartment definition
    lets a resource be in several patients' records, and a patient app may read such a
    resource, but must not file one into another patient's record."""
    patient = confining_patient(resource_type, interaction)
    if patient is None:
        return
    if resource_type == "Patient" and resource is not None and resource.get("id") == patient:
        return
    patients = {target for kind, target in references if kind == "Patient"}
    if patient in patients and (interaction == "read" or patients == {patient}):
        return
    raise Forbidden(
        f"{resource_type} is outside the compartment of Patient/{patient} that the "
        "patient/ scopes of this token allow",
        rofecare_code="rofecare-3405",
    )


def check_append_only(resource_type: str, *, exists: bool) -> None:
    """AuditEvents are never changed or removed once written, by anybody, through any door
    (a PUT that creates one is a create). 405: no scope or role could allow it."""
    if resource_type in APPEND_ONLY and exists:
        raise MethodNotAllowed(
            f"{resource_type} is append-only: it cannot be updated or deleted",
            rofecare_code="rofecare-3406",
        )


def check_consultation_editor(resource_type: str, current: Mapping[str, Any] | None) -> None:
    """A physician changes only the consultations (Encounters) they take part in, unless
    they hold a supervising role (DESIGN.md, Clinical: "a practitioner edits only their
    own consultations unless supervisor").

    Applies when the physician role is what grants the change: a user whose other roles
    also allow updating Encounters (a nurse's triage, reception) is not narrowed by it.
    The user's Practitioner (``fhirUser``) must be an ``Encounter.participant.individual``
    of the version being changed."""
    access = current_access()
    if resource_type != "Encounter" or current is None or access is None:
        return
    if "physician" not in access.roles:
        return
    others = [name for name in access.roles if name != "physician"]
    if any(role(name).supervises_consultations for name in access.roles) or any(
        role(name).scopes.allows("Encounter", "u") for name in others
    ):
        return
    participants = {
        str(item.get("individual", {}).get("reference"))
        for item in current.get("participant", [])
        if isinstance(item, dict) and isinstance(item.get("individual"), dict)
    }
    if access.fhir_user is None or access.fhir_user not in participants:
        raise Forbidden(
            "A physician may change only the consultations they take part in "
            "(Encounter.participant.individual); a supervisor may change any",
            expression="Encounter.participant",
            rofecare_code="rofecare-3408",
        )
