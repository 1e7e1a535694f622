"""Index entries of a resource: every search parameter's values, typed, at write time.

The values each parameter's expression selects (``search/paths.py``, or the general engine)
are turned into the typed entries of its search type, following the R4 rules for which
datatypes each type indexes (https://hl7.org/fhir/R4/search.html#ptypes). Composite and
special parameters are not indexed here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from fhir_server.model.instant import parse_date_range, to_micros
from fhir_server.search.paths import Value
from fhir_server.search.registry import SearchParameter, SearchParameterRegistry
from fhir_server.search.values import (
    DateEntry,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)

_STRING_PARTS = {
    "HumanName": ("text", "family", "given", "prefix", "suffix"),
    "Address": ("text", "line", "city", "district", "state", "postalCode", "country"),
}
_RELATIVE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")


def normalize(text: str) -> str:
    """Case- and accent-insensitive form: 'Éloïse' and 'eloise' search alike."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


class Indexer:
    def __init__(self, registry: SearchParameterRegistry) -> None:
        self._registry = registry

    def entries(self, resource: dict[str, Any]) -> list[IndexEntry]:
        """Every index entry of ``resource``, without duplicates."""
        found: dict[IndexEntry, None] = {}
        for parameter in self._registry.for_type(resource["resourceType"]).values():
            extract = _EXTRACTORS.get(parameter.type)
            if extract is None:
                continue
            for value in parameter.evaluate(resource):
                for entry in extract(parameter, value):
                    found[entry] = None
        return list(found)


def _strings(parameter: SearchParameter, value: Value) -> Iterator[IndexEntry]:
    node = value.value
    if isinstance(node, str):
        yield StringEntry(parameter.code, normalize(node), node)
    elif isinstance(node, dict):
        parts = _STRING_PARTS.get(value.type) or tuple(node)
        for part in parts:
            item = node.get(part)
            for text in item if isinstance(item, list) else [item]:
                if isinstance(text, str):
                    yield StringEntry(parameter.code, normalize(text), text)


def _tokens(parameter: SearchParameter, value: Value) -> Iterator[IndexEntry]:
    node, code = value.value, parameter.code
    if isinstance(node, bool):
        yield TokenEntry(code, None, "true" if node else "false")
    elif isinstance(node, (str, int, float)):
        yield TokenEntry(code, None, str(node))
    elif isinstance(node, dict):
        if "coding" in node or value.type == "CodeableConcept":
            for coding in node.get("coding") or []:
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    yield TokenEntry(code, coding.get("system"), coding["code"])
        elif isinstance(node.get("code"), str):  # Coding
            yield TokenEntry(code, node.get("system"), node["code"])
        elif isinstance(node.get("value"), str):  # Identifier, ContactPoint
            system = node.get("system") if value.type != "ContactPoint" else None
            yield TokenEntry(code, system, node["value"])


def _dates(parameter: SearchParameter, value: Value) -> Iterator[IndexEntry]:
    node = value.value
    if isinstance(node, str):
        interval = parse_date_range(node)
        if interval:
            yield DateEntry(parameter.code, to_micros(interval[0]), to_micros(interval[1]))
    elif isinstance(node, dict):
        if "start" in node or "end" in node:  # Period
            start = parse_date_range(node["start"]) if isinstance(node.get("start"), str) else None
            end = parse_date_range(node["end"]) if isinstance(node.get("end"), str) else None
            yield DateEntry(
                parameter.code,
                to_micros(start[0]) if start else None,
                to_micros(end[1]) if end else None,
            )
        for event in node.get("event") or []:  # Timing
            interval = parse_date_range(event) if isinstance(event, str) else None
            if interval:
                yield DateEntry(parameter.code, to_micros(interval[0]), to_micros(interval[1]))


def _numbers(parameter: SearchParameter, value: Value) -> Iterator[IndexEntry]:
    node = value.value
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        yield NumberEntry(parameter.code, float(node))


def _quantities(parameter: SearchParameter, value: Value) -> Iterator[IndexEntry]:
    node = value.value
    if isinstance(node, dict) and isinstance(node.get("value"), (int, float)):
        system, unit_code = node.get("system"), node.get("code") or node.get("unit")
        if "currency" in node:  # Money
            system, unit_code = "urn:iso:std:iso:4217", node["currency"]
        yield QuantityEntry(parameter.code, float(node["value"]), system, unit_code)


def _references(parameter: SearchParameter, value: Value) -> Iterator[IndexEntry]:
    node = value.value
    text = node.get("reference") if isinstance(node, dict) else node
    if not isinstance(text, str) or text.startswith("#"):
        return
    match = _RELATIVE.fullmatch(text)
    if match and not text.startswith(("urn:", "http:", "https:")):
        yield ReferenceEntry(parameter.code, match.group(1), match.group(2), None)
    else:
        yield ReferenceEntry(parameter.code, None, None, text)


def _uris(parameter: SearchParameter, value: Value) -> Iterator[IndexEntry]:
    if isinstance(value.value, str):
        yield UriEntry(parameter.code, value.value)


_EXTRACTORS = {
    "string": _strings,
    "token": _tokens,
    "date": _dates,
    "number": _numbers,
    "quantity": _quantities,
    "reference": _references,
    "uri": _uris,
}
