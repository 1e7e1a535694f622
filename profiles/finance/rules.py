"""Finance context rules that need other resources.

- rofecare-1910: an invoice references at least one act: each ``lineItem.chargeItemReference``
  is a ChargeItem of this server, of the invoice's patient, not entered in error, and there
  is at least one (DESIGN.md: "an invoice references at least one act"). Checked when the
  invoice is created or its lines change; a cancelled invoice is not re-examined.
- rofecare-1916: a payment never exceeds the balance due: what the active payments settle
  of an invoice (``detail.amount`` of the details whose ``request`` is the invoice) never
  exceeds its ``totalGross``, in its currency. Guarded per invoice, so two cash desks
  taking the last payment of one invoice at once cannot both succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.errors import BusinessRuleViolation, Conflict
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


def settled(payment: dict[str, Any]) -> dict[str, tuple[float, str | None]]:
    """Invoice reference -> (amount, currency) this payment settles of it."""
    found: dict[str, tuple[float, str | None]] = {}
    for detail in payment.get("detail") or []:
        target = reference(detail.get("request")) if isinstance(detail, dict) else None
        amount = (detail.get("amount") or {}) if isinstance(detail, dict) else {}
        value = amount.get("value")
        if target is None or not target.startswith("Invoice/"):
            continue
        if not isinstance(value, (int, float)):
            continue
        before = found.get(target, (0.0, amount.get("currency")))
        found[target] = (before[0] + float(value), before[1])
    return found


@dataclass(frozen=True)
class PaymentWithinBalance:
    code: str = "rofecare-1916"
    title: str = "A payment never exceeds the balance due of the invoices it settles"
    resource_types: frozenset[str] = frozenset({"PaymentReconciliation"})
    guarded: bool = True  # the store checks it again in the write transaction

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None:
        payment = change.resource
        if payment is None or payment.get("status") != "active":
            return
        paying = settled(payment)
        before = change.previous
        if before is not None and before.get("status") == "active" and settled(before) == paying:
            return
        for target, (amount, currency) in paying.items():
            invoice = await context.read(target)
            if invoice is None or invoice.get("status") in ("cancelled", "entered-in-error"):
                raise self._refusal(f"{target} is not an invoice that can be paid", 422)
            total = invoice.get("totalGross") or {}
            due, due_currency = total.get("value"), total.get("currency")
            if not isinstance(due, (int, float)):
                raise self._refusal(f"{target} has no total (totalGross) to pay", 422)
            if currency is not None and due_currency is not None and currency != due_currency:
                raise self._refusal(f"{target} is due in {due_currency}, not {currency}", 422)
            criteria = [("invoice", target), ("status", "active")]
            found, others = await context.others(
                change, criteria, lambda other: other.get("status") == "active"
            )
            paid = sum(settled(other).get(target, (0.0, None))[0] for other in others)
            if paid + amount > float(due) + 1e-9:
                left = max(float(due) - paid, 0.0)
                raise self._refusal(
                    f"{target}: {amount:g} {currency or ''} exceeds the balance due "
                    f"({left:g} of {due:g} {due_currency or ''})",
                    409 if paid else 422,
                )
            verdict.guards.append(
                context.guard(
                    "PaymentReconciliation",
                    criteria,
                    lock=f"invoice-payments:{target}",
                    code=self.code,
                    message=f"{target} was paid meanwhile; the balance due changed",
                    tolerated=found,
                )
            )

    def _refusal(self, message: str, status: int) -> BusinessRuleViolation | Conflict:
        kind = Conflict if status == 409 else BusinessRuleViolation
        return kind(
            message, rofecare_code=self.code, expression="PaymentReconciliation.detail.amount"
        )


RULES = (InvoiceOfActs(), PaymentWithinBalance())
