"""Medtech context: profiles, code systems and rules."""
