"""Rofecare profiles, their examples and their documentation."""
