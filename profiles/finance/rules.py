"""Finance context rules that need other resources.

- rofecare-1910: an invoice references at least one act: each ``lineItem.chargeItemReference``
  is a ChargeItem of this server, of the invoice's patient, not entered in error, and there
  is at least one (DESIGN.md: "an invoice references at least one act"). Checked when the
  invoice is created or its lines change; a cancelled invoice is not re-examined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.errors import BusinessRuleViolation
from fhir_server.services.rules import Change, RuleContext, Verdict
from profiles.support import reference


def charge_items(invoice: dict[str, Any]) -> list[tuple[int, str | None]]:
    """(line index, reference) of each line's charge item reference."""
    return [
        (index, reference(line.get("chargeItemReference")))
        for index, line in enumerate(invoice.get("lineItem") or [])
        if isinstance(line, dict)
    ]


@dataclass(frozen=True)
class InvoiceOfActs:
    code: str = "rofecare-1910"
    title: str = "An invoice references at least one act (ChargeItem) of its patient"
    resource_types: frozenset[str] = frozenset({"Invoice"})

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        invoice = change.resource
        if invoice is None or invoice.get("status") in ("cancelled", "entered-in-error"):
            return
        lines = charge_items(invoice)
        if change.previous is not None and lines == charge_items(change.previous):
            return
        acts = [(index, target) for index, target in lines if target is not None]
        if not acts:
            raise BusinessRuleViolation(
                "An invoice references at least one act: a lineItem.chargeItemReference",
                rofecare_code=self.code,
                expression="Invoice.lineItem",
            )
        patient = reference(invoice.get("subject"))
        for index, target in acts:
            where = f"Invoice.lineItem[{index}].chargeItemReference"
            item = await context.read(target) if target.startswith("ChargeItem/") else None
            if item is None or item.get("status") == "entered-in-error":
                raise BusinessRuleViolation(
                    f"{target} is not a charge item of this server",
                    rofecare_code=self.code,
                    expression=where,
                )
            if patient is not None and reference(item.get("subject")) != patient:
                raise BusinessRuleViolation(
                    f"{target} is an act of another patient than {patient}",
                    rofecare_code=self.code,
                    expression=where,
                )


RULES = (InvoiceOfActs(),)
