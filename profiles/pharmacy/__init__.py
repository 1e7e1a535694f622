"""Pharmacy context: profiles, code systems and rules."""
