"""Small readers of FHIR JSON the rules share (references, codings, instants)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fhir_server.model.instant import parse_date_range


def reference(value: Any) -> str | None:
    """The ``reference`` of a Reference, when it is one."""
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        text: str = value["reference"]
        return text
    return None


def codings(concept: Any) -> Iterator[tuple[str | None, str]]:
    """(system, code) of each coding of a CodeableConcept."""
    if not isinstance(concept, dict):
        return
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            yield coding.get("system"), coding["code"]


def has_coding(concept: Any, system: str, code: str) -> bool:
    return (system, code) in set(codings(concept))


def period(value: Any) -> tuple[datetime, datetime] | None:
    """The [start, end) a FHIR date, dateTime or instant covers at its precision."""
    if not isinstance(value, str):
        return None
    return parse_date_range(value)


def escape(value: str) -> str:
    """A search value with FHIR's special characters escaped (search.html#escaping)."""
    for special in ("\\", "|", ",", "$"):
        value = value.replace(special, "\\" + special)
    return value


def token(system: str, code: str) -> str:
    """``system|code`` as a token search value."""
    return f"{escape(system)}|{escape(code)}"
