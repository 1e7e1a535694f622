"""Code systems and value sets (ICD-10, UCUM, FHIR core) behind the core's terminology hook.

``fhir_server/app.py`` imports this package by name at start-up and calls :func:`provider`
(the core never imports it statically, DESIGN.md); the terminology operations
(``operations/terminology.py``) use the same object, so an answer of ``$validate-code`` is
the answer validation gives a write.
"""

from __future__ import annotations

from functools import cache

from terminology.provider import TerminologyProvider


@cache
def provider() -> TerminologyProvider:
    """The process's one provider, a ``fhir_server.definitions.terminology.Terminology``;
    its sources load on first use (``terminology/provider.py``)."""
    return TerminologyProvider()
