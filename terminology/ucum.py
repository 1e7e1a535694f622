"""UCUM in the terminology (``http://unitsofmeasure.org``, https://hl7.org/fhir/R4/ucum.html).

UCUM is a grammar, not a list: its value sets (``ucum-units``, ``ucum-vitals-common``...)
include the whole system, so membership is validity, which the server's one UCUM reader
(``fhir_server/search/ucum.py``) decides.
"""

from __future__ import annotations

from fhir_server.search.ucum import is_valid

__all__ = ["SYSTEM", "is_valid"]

SYSTEM = "http://unitsofmeasure.org"
