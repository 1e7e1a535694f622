"""Clinical context: profiles, code systems and rules."""
