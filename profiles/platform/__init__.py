"""Platform context: profiles, code systems and rules."""
