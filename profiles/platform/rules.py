"""Platform context rules that need other resources.

- rofecare-1911: appointments never overlap on the same practitioner, room (Location) or
  device: an appointment that holds its participants (pending, booked, arrived, checked-in,
  fulfilled) may not overlap another one that holds any of them, unless that participant
  declined. Guarded per participant, so of two simultaneous bookings of one slot exactly
  one wins.
- rofecare-1912: a signed document can no longer change: a DocumentReference that a
  Provenance with a signature targets is neither updated nor deleted, and that Provenance
  is not changed either (else removing the signature would unlock the document).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.errors import Conflict
from fhir_server.model.instant import to_instant
from fhir_server.services.rules import Change, RuleContext, Verdict
from profiles.support import period, reference

HOLDING = ("pending", "booked", "arrived", "checked-in", "fulfilled")
HELD_TYPES = ("Practitioner", "Location", "Device")


def held(appointment: dict[str, Any]) -> list[str]:
    """The practitioners, rooms and devices an appointment holds."""
    if appointment.get("status") not in HOLDING:
        return []
    found = []
    for participant in appointment.get("participant") or []:
        if not isinstance(participant, dict) or participant.get("status") == "declined":
            continue
        actor = reference(participant.get("actor"))
        if actor is not None and actor.split("/", 1)[0] in HELD_TYPES and actor.count("/") == 1:
            found.append(actor)
    return found


def holding(actor: str) -> Callable[[dict[str, Any]], bool]:
    """Does an appointment hold this practitioner, room or device?"""
    return lambda appointment: actor in held(appointment)


def interval(appointment: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """[start, end) of an appointment with both (an open-ended one holds nothing yet)."""
    start, end = period(appointment.get("start")), period(appointment.get("end"))
    if start is None or end is None:
        return None
    return start[0], end[0]


@dataclass(frozen=True)
class NoOverlappingAppointments:
    code: str = "rofecare-1911"
    title: str = "Appointments never overlap on the same practitioner, room or device"
    resource_types: frozenset[str] = frozenset({"Appointment"})
    guarded: bool = True  # the store checks it again in the write transaction

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        appointment = change.resource
        if appointment is None:
            return
        when = interval(appointment)
        actors = held(appointment)
        if when is None or not actors:
            return
        start, end = to_instant(when[0]), to_instant(when[1])
        for actor in dict.fromkeys(actors):
            criteria = [
                ("actor", actor),
                ("date", f"lt{end}"),
                ("end", f"gt{start}"),
                ("status", ",".join(HOLDING)),
            ]
            found, others = await context.others(
                change,
                criteria,
                holding(actor),
            )
            for other in others:
                other_when = interval(other)
                if other_when is not None and other_when[0] < when[1] and when[0] < other_when[1]:
                    raise Conflict(
                        f"{actor} already has Appointment/{other.get('id')} from "
                        f"{other.get('start')} to {other.get('end')}",
                        rofecare_code=self.code,
                        expression="Appointment.participant",
                    )
            verdict.guards.append(
                context.guard(
                    "Appointment",
                    criteria,
                    lock=f"schedule:{actor}",
                    code=self.code,
                    message=f"{actor} was booked meanwhile for an overlapping appointment",
                    tolerated=found,  # matched the search, but do not overlap (checked above)
                )
            )


def signs(provenance: dict[str, Any]) -> bool:
    return bool(provenance.get("signature"))


@dataclass(frozen=True)
class SignedDocumentsAreFrozen:
    code: str = "rofecare-1912"
    title: str = "A signed document (a Provenance with a signature targets it) can no longer change"
    resource_types: frozenset[str] = frozenset({"DocumentReference", "Provenance"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        if change.previous is None:
            return
        if change.resource_type == "Provenance":
            if signs(change.previous) and any(
                (reference(target) or "").startswith("DocumentReference/")
                for target in change.previous.get("target") or []
            ):
                raise Conflict(
                    "This Provenance signs a document: it can no longer change",
                    rofecare_code=self.code,
                    expression="Provenance",
                )
            return
        document = f"DocumentReference/{change.resource_id}"
        signatures = [
            provenance
            for provenance in await context.search("Provenance", [("target", document)])
            if signs(provenance)
        ]
        if signatures:
            raise Conflict(
                f"{document} is signed (Provenance/{signatures[0].get('id')}): it can no "
                "longer change; write a new document that replaces it (relatesTo)",
                rofecare_code=self.code,
                expression="DocumentReference",
            )


RULES = (NoOverlappingAppointments(), SignedDocumentsAreFrozen())
