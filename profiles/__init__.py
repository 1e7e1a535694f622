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
    from profiles.patient import rules as patient_rules

    for rule in patient_rules.RULES:
        registry.add(rule)
