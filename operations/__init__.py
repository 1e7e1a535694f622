"""Custom FHIR ``$operations`` (dispensing, billing, ...), one module per bounded context.

Registered with the core's operation registry at start-up; none ship yet.
"""
