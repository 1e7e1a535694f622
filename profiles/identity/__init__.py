"""Identity context: profiles, code systems and rules."""
