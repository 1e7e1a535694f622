"""Rofecare StructureDefinitions, SearchParameters and invariants, one folder per context."""
