"""Interop context: profiles, code systems and rules."""
