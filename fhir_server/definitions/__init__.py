"""The packaged FHIR R4 definitions, loaded once per process (they are immutable data)."""

from fhir_server.definitions.registry import Definitions, load_definitions

__all__ = ["Definitions", "load_definitions"]
