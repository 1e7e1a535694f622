"""The terminology hook, as validation names it (defined with the definitions, below
search and validation, which both ask it)."""

from fhir_server.definitions.terminology import CodeCheck, Terminology

__all__ = ["CodeCheck", "Terminology"]
