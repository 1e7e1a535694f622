"""Placeholder."""

CASES: tuple = ()
