"""Validation of resources before they are written: structure, then profiles and invariants."""
