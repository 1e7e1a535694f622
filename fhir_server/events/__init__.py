"""Events raised by writes: the audit trail (and, later, the outbox and subscriptions)."""
