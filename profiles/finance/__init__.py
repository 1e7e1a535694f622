"""Finance context: profiles, code systems and rules."""
