"""Medical technology rules that need other resources.

- rofecare-1906: a laboratory result (Observation or DiagnosticReport) becomes final only
  when a biologist performed or verified it: one of its performers (or a report's results
  interpreters) is a Practitioner holding an active PractitionerRole coded ``biologist``
  (``http://rofecare.com/fhir/CodeSystem/staff-role``), or such a PractitionerRole. The
  role is read from FHIR, not from the writer's token, so results arriving from a
  laboratory system over HL7 are held to the same rule.
- rofecare-1907 (an intervention, never a refusal): a numeric result is interpreted
  against its reference ranges (``interpretation.py``); an abnormal one gets an active
  ``Flag`` on the patient, written in the same transaction (one per result, id derived
  from it, so a corrected result updates its flag, and a result back in range closes it).
- rofecare-1909: a sample keeps its chain of custody: a new version of a Specimen keeps its
  collection (who, when), its receipt time and every processing step already recorded, in
  order (new steps are added after them); the order of the steps within one version is the
  rofecare-specimen profile's.
- rofecare-1908: a device under maintenance (its ``statusReason`` coded ``maintenance`` in
  a Rofecare code system) cannot be used by a new exam (a request, observation, report,
  procedure, imaging study or media naming it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import BusinessRuleViolation
from fhir_server.services.rules import Change, RuleContext, Verdict
from profiles.medtech.interpretation import interpret, with_interpretation
from profiles.support import codings, reference

STAFF_ROLE = "http://rofecare.com/fhir/CodeSystem/staff-role"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FINAL_STATUSES = ("final", "amended", "corrected")
ROFECARE_SYSTEMS = "http://rofecare.com/fhir/CodeSystem/"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
EXAMS = frozenset(
    {"ServiceRequest", "Observation", "DiagnosticReport", "Procedure", "ImagingStudy", "Media"}
)


def is_laboratory(resource: dict[str, Any]) -> bool:
    """Observation category ``laboratory``, or a report of the v2-0074 ``LAB`` section."""
    for concept in resource.get("category") or []:
        for _, code in codings(concept):
            if code in ("laboratory", "LAB"):
                return True
    return False


def verifiers(resource: dict[str, Any]) -> list[str]:
    """The references of who performed or verified a result."""
    found = [reference(item) for item in resource.get("performer") or []]
    found += [reference(item) for item in resource.get("resultsInterpreter") or []]
    return [item for item in found if item is not None]


@dataclass(frozen=True)
class FinalOnlyByBiologist:
    code: str = "rofecare-1906"
    title: str = "A laboratory result becomes final only once a biologist performed or verified it"
    resource_types: frozenset[str] = frozenset({"Observation", "DiagnosticReport"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        result = change.resource
        if result is None or result.get("status") not in FINAL_STATUSES:
            return
        if not is_laboratory(result):
            return
        previous = change.previous
        if (
            previous is not None
            and previous.get("status") in FINAL_STATUSES
            and verifiers(previous) == verifiers(result)
        ):
            return  # already validated by the same people: a later correction of a detail
        for target in verifiers(result):
            if await self._is_biologist(context, target):
                return
        field = "resultsInterpreter" if change.resource_type == "DiagnosticReport" else "performer"
        raise BusinessRuleViolation(
            f"A {result.get('status')} laboratory result needs a biologist among its "
            f"{field}s (a Practitioner with an active PractitionerRole coded "
            f"{STAFF_ROLE}|biologist)",
            rofecare_code=self.code,
            expression=f"{change.resource_type}.{field}",
        )

    async def _is_biologist(self, context: RuleContext, target: str) -> bool:
        if target.startswith("PractitionerRole/"):
            role = await context.read(target)
            return role is not None and _is_active_biologist(role)
        if not target.startswith("Practitioner/"):
            return False
        roles = await context.search(
            "PractitionerRole", [("practitioner", target), ("role", f"{STAFF_ROLE}|biologist")]
        )
        return any(_is_active_biologist(role) for role in roles)


def _is_active_biologist(role: dict[str, Any]) -> bool:
    if role.get("active") is False:
        return False
    return any((STAFF_ROLE, "biologist") in set(codings(code)) for code in role.get("code") or [])


@dataclass(frozen=True)
class AbnormalResultFlagged:
    code: str = "rofecare-1907"
    title: str = (
        "A numeric result out of its reference range is interpreted (H, L, HH, LL) and flagged"
    )
    resource_types: frozenset[str] = frozenset({"Observation"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        result = verdict.resource
        if result is None or result.get("status") == "entered-in-error":
            return
        result = dict(result)
        codes: list[str | None] = []
        code = interpret(result.get("valueQuantity"), result.get("referenceRange"))
        interpretation = with_interpretation(result.get("interpretation"), code)
        if interpretation is not None:
            result["interpretation"] = interpretation
        codes.append(code)
        components = []
        for component in result.get("component") or []:
            component = dict(component)
            found = interpret(component.get("valueQuantity"), component.get("referenceRange"))
            updated = with_interpretation(component.get("interpretation"), found)
            if updated is not None:
                component["interpretation"] = updated
            components.append(component)
            codes.append(found)
        if components:
            result["component"] = components
        verdict.resource = result
        abnormal = [item for item in codes if item is not None and item != "N"]
        flag_id = _flag_id(change.resource_type, change.resource_id)
        if abnormal:
            verdict.companions.append(_flag(flag_id, change, result, abnormal))
            return
        if change.previous is None:
            return  # a new result has no flag to close
        existing = await context.read(f"Flag/{flag_id}")
        if existing is not None and existing.get("status") == "active":
            verdict.companions.append({**existing, "status": "inactive"})


def _flag_id(resource_type: str, resource_id: str) -> str:
    digest = hashlib.sha256(f"{resource_type}/{resource_id}".encode()).hexdigest()
    return f"abnormal-{digest[:40]}"


def _flag(
    flag_id: str, change: Change, result: dict[str, Any], abnormal: list[str]
) -> dict[str, Any]:
    what = result.get("code", {}).get("text") or next(
        (coding.get("display") for coding in result.get("code", {}).get("coding") or []), None
    )
    worst = next((code for code in ("HH", "LL", "H", "L") if code in abnormal), "H")
    flag: dict[str, Any] = {
        "resourceType": "Flag",
        "id": flag_id,
        "extension": [
            {
                "url": FLAG_DETAIL,
                "valueReference": {"reference": f"{change.resource_type}/{change.resource_id}"},
            }
        ],
        "status": "active",
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "lab"}]}],
        "code": {"text": f"Abnormal result ({worst}): {what or 'laboratory result'}"},
        "subject": result.get("subject") or {"display": "unknown subject"},
    }
    start = result.get("effectiveDateTime") or result.get("issued")
    if isinstance(start, str):
        flag["period"] = {"start": start}
    if isinstance(result.get("encounter"), dict):
        flag["encounter"] = result["encounter"]
    return flag


def device_references(node: Any) -> Iterator[str]:
    """Every relative ``Device/...`` reference anywhere in ``node``."""
    if isinstance(node, dict):
        target = node.get("reference")
        if isinstance(target, str) and target.startswith("Device/") and target.count("/") == 1:
            yield target
        for key, value in node.items():
            if key != "contained":
                yield from device_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from device_references(item)


def under_maintenance(device: dict[str, Any]) -> bool:
    return any(
        code == "maintenance" and (system or "").startswith(ROFECARE_SYSTEMS)
        for concept in device.get("statusReason") or []
        for system, code in codings(concept)
    )


@dataclass(frozen=True)
class NoExamOnDeviceUnderMaintenance:
    code: str = "rofecare-1908"
    title: str = "A device under maintenance cannot be used by a new exam"
    resource_types: frozenset[str] = EXAMS

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        if change.resource is None:
            return
        before = set(device_references(change.previous)) if change.previous else set()
        for target in dict.fromkeys(device_references(change.resource)):
            if target in before:
                continue  # named before: an exam already under way keeps its device
            device = await context.read(target)
            if device is not None and under_maintenance(device):
                raise BusinessRuleViolation(
                    f"{target} is under maintenance and cannot be used for an exam",
                    rofecare_code=self.code,
                    expression=change.resource_type,
                )


CUSTODY_FIELDS = ("collector", "collectedDateTime", "collectedPeriod")


@dataclass(frozen=True)
class ChainOfCustodyKept:
    code: str = "rofecare-1909"
    title: str = (
        "A sample's chain of custody (collection, receipt, processing steps) is kept by every "
        "later version"
    )
    resource_types: frozenset[str] = frozenset({"Specimen"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        before, after = change.previous, change.resource
        if before is None:
            return
        if after is None:
            if before.get("receivedTime") or before.get("processing"):
                self._refuse("A sample the laboratory received cannot be deleted", "Specimen")
            return
        was, now = before.get("collection") or {}, after.get("collection") or {}
        for key in CUSTODY_FIELDS:
            if key in was and now.get(key) != was[key]:
                self._refuse(f"Specimen.collection.{key} was recorded: it cannot change", key)
        if before.get("receivedTime") and after.get("receivedTime") != before["receivedTime"]:
            self._refuse("Specimen.receivedTime was recorded: it cannot change", "receivedTime")
        steps, kept = before.get("processing") or [], after.get("processing") or []
        if kept[: len(steps)] != steps:
            self._refuse(
                "The processing steps recorded stay, in their order; new ones come after them",
                "processing",
            )

    def _refuse(self, message: str, element: str) -> None:
        path = element if element.startswith("Specimen") else f"Specimen.{element}"
        if element in CUSTODY_FIELDS:
            path = f"Specimen.collection.{element}"
        raise BusinessRuleViolation(message, rofecare_code=self.code, expression=path)


RULES = (
    FinalOnlyByBiologist(),
    AbnormalResultFlagged(),
    NoExamOnDeviceUnderMaintenance(),
    ChainOfCustodyKept(),
)
