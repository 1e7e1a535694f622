"""Rofecare StructureDefinitions, SearchParameters and invariants, one folder per context.

The JSON conformance resources are read by the core as package data
(``fhir_server.definitions.registry.profile_resources``); the rules that need other
resources than the one written are Python, registered here. The core loads this package
by name at start-up and calls ``register_rules``; it never imports the modules.
"""

from __future__ import annotations

from fhir_server.services.rules import RuleRegistry


def register_rules(registry: RuleRegistry) -> None:
    """Register every context's write rules."""
    from profiles.clinical import rules as clinical
    from profiles.finance import rules as finance
    from profiles.medtech import rules as medtech
    from profiles.patient import rules as patient
    from profiles.pharmacy import rules as pharmacy
    from profiles.platform import rules as platform

    for context in (patient, clinical, medtech, pharmacy, finance, platform):
        for rule in context.RULES:
            registry.add(rule)
