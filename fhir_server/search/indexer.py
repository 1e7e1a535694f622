"""Index entries of a resource: every search parameter's values, typed, at write time.

The values each parameter's expression selects (``search/paths.py``, or the general engine)
are turned into the typed entries of its search type, following the R4 rules for which
datatypes each type indexes (https://hl7.org/fhir/R4/search.html#ptypes). ``_id`` and
``_lastUpdated`` are columns of every store, so they get no entries; special parameters
(``near``) have no R4 expression to index.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Collection
from typing import Any

from fhir_server.model.instant import parse_date_range, to_micros
from fhir_server.search.paths import Value
from fhir_server.search.registry import SearchParameter, SearchParameterRegistry
from fhir_server.search.ucum import canonical
from fhir_server.search.values import (
    DateEntry,
    FullText,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)

UCUM = "http://unitsofmeasure.org"
COLUMN_PARAMETERS = frozenset({"_id", "_lastUpdated"})

_STRING_PARTS = {
    "HumanName": ("text", "family", "given", "prefix", "suffix"),
    "Address": ("text", "line", "city", "district", "state", "postalCode", "country"),
}
_RELATIVE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")


_WORD = re.compile(r"[^\W_]+")  # terms as FTS5's unicode61 tokenizer splits them


def words(text: str) -> list[str]:
    """The normalized words of ``text``: what ``_text``/``_content`` match, as the SQLite
    full-text index and the MongoDB store's word arrays both split it."""
    return _WORD.findall(normalize(text))


@functools.lru_cache(maxsize=65_536)
def normalize(text: str) -> str:
    """Case- and accent-insensitive form: 'Éloïse' and 'eloise' search alike."""
    if text.isascii():  # nothing to decompose; for ASCII, casefold() is lower()
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


MAX_SHAPES = 4_096


class Indexer:
    def __init__(self, registry: SearchParameterRegistry) -> None:
        self.registry = registry
        # (resource type, top-level keys) -> the parameters that may find values there
        self._shapes: dict[
            tuple[str, tuple[str, ...], tuple[str, ...]], tuple[SearchParameter, ...]
        ] = {}

    def entries(
        self, resource: dict[str, Any], only: Collection[str] | None = None
    ) -> list[IndexEntry]:
        """Every index entry of ``resource`` (of the parameters ``only`` names), without
        duplicates."""
        found: list[IndexEntry] = []
        for parameter in self._parameters_for(resource):
            if only is not None and parameter.code not in only:
                continue
            if parameter.type == "composite":
                _composite(parameter, resource, found)
                continue
            extract, code = _EXTRACTORS[parameter.type], parameter.code
            for value in parameter.evaluate(resource):
                extract(code, value, 0, found)
        return list(dict.fromkeys(found))

    def _parameters_for(self, resource: dict[str, Any]) -> tuple[SearchParameter, ...]:
        """The indexed parameters of the resource's type whose expressions start from a
        key it has. Why: a type has 20-40 parameters, a resource fills a few of its
        elements, and walking an absent element still costs ~1.5 us. Resources from one
        source share their shape (their keys, and those of their ``meta``), so the choice
        is made once per shape."""
        meta = resource.get("meta")
        shape = (
            resource["resourceType"],
            tuple(resource),
            tuple(meta) if isinstance(meta, dict) else (),
        )
        chosen = self._shapes.get(shape)
        if chosen is None:
            present = {*shape[1], *(f"meta.{key}" for key in shape[2])}
            chosen = tuple(
                parameter
                for parameter in self.registry.for_type(shape[0]).values()
                if parameter.code not in COLUMN_PARAMETERS
                and (parameter.type == "composite" or parameter.type in _EXTRACTORS)
                and (parameter.reads is None or not parameter.reads.isdisjoint(present))
            )
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            self._shapes[shape] = chosen
        return chosen


def full_text(resource: dict[str, Any]) -> FullText:
    """``_text`` searches the narrative; ``_content`` every string value of the resource."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    narrative = _TAG.sub(" ", div) if isinstance(div, str) else ""
    strings: list[str] = []
    _collect_strings(resource, strings)
    return FullText(normalize(html.unescape(narrative)), normalize(" ".join(strings)))


_TAG = re.compile(r"<[^>]*>")
_NOT_CONTENT = frozenset({"div", "reference", "system", "url", "id", "resourceType", "data"})


def _collect_strings(node: Any, into: list[str]) -> None:
    if isinstance(node, dict):
        for key, item in node.items():
            if key not in _NOT_CONTENT:
                _collect_strings(item, into)
    elif isinstance(node, list):
        for item in node:
            _collect_strings(item, into)
    elif isinstance(node, str):
        into.append(node)


def _composite(
    parameter: SearchParameter, resource: dict[str, Any], into: list[IndexEntry]
) -> None:
    """Each root item is one group; component ``i`` is stored as ``code$i`` in that group.

    Only items with a value for every component are stored: a composite search matches all
    components in one group, so a partial group never matches, and ``:missing`` means "no
    item with the whole pair". Why it matters: R4 Observation has four ``code-value-*``
    composites rooted at the resource, and storing the code of each for every Observation,
    whatever its value's type, wasted three in four of them: 42,760 of the 281,588 entries
    of the Synthea sample data (15 %)."""
    group = 0
    for root in parameter.composite:
        for item in root.evaluate(resource):
            found: list[IndexEntry] = []
            complete = True
            for index, (kind, paths) in enumerate(root.components):
                extract = _EXTRACTORS.get(kind)
                if extract is None:
                    continue
                code = f"{parameter.code}${index}"
                before = len(found)
                for path in paths:
                    for value in path.evaluate(item.value):
                        extract(code, value, group + 1, found)
                if len(found) == before:
                    complete = False
                    break
            if complete and found:
                group += 1
                into.extend(found)


def _strings(code: str, value: Value, group: int, into: list[IndexEntry]) -> None:
    node = value.value
    if isinstance(node, str):
        into.append(StringEntry(code, normalize(node), node, group))
    elif isinstance(node, dict):
        parts = _STRING_PARTS.get(value.type) or tuple(node)
        for part in parts:
            item = node.get(part)
            for text in item if isinstance(item, list) else [item]:
                if isinstance(text, str):
                    into.append(StringEntry(code, normalize(text), text, group))


def _tokens(code: str, value: Value, group: int, into: list[IndexEntry]) -> None:
    node = value.value
    if isinstance(node, bool):
        into.append(TokenEntry(code, None, "true" if node else "false", None, group))
    elif isinstance(node, (str, int, float)):
        into.append(TokenEntry(code, None, str(node), None, group))
    elif isinstance(node, dict):
        if "coding" in node or value.type == "CodeableConcept":
            for coding in node.get("coding") or []:
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    into.append(_coding(code, coding, group))
            if isinstance(node.get("text"), str):
                into.append(TokenEntry(code, None, "", normalize(node["text"]), group))
        elif isinstance(node.get("code"), str):  # Coding
            into.append(_coding(code, node, group))
        elif isinstance(node.get("value"), str):  # Identifier, ContactPoint
            if value.type == "ContactPoint":
                into.append(TokenEntry(code, None, node["value"], None, group))
                return
            into.append(TokenEntry(code, node.get("system"), node["value"], None, group))
            _identifier_types(code, node, group, into)


def _coding(code: str, coding: dict[str, Any], group: int) -> TokenEntry:
    display = coding.get("display")
    normalized = normalize(display) if isinstance(display, str) else None
    return TokenEntry(code, coding.get("system"), coding["code"], normalized, group)


def _identifier_types(
    code: str, identifier: dict[str, Any], group: int, into: list[IndexEntry]
) -> None:
    """``:of-type`` (search.html#token): stored as (type system, 'type code|value')."""
    kind = identifier.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    for coding in codings or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            text = f"{coding['code']}|{identifier['value']}"
            into.append(TokenEntry(f"{code}:of-type", coding.get("system"), text, None, group))


def _dates(code: str, value: Value, group: int, into: list[IndexEntry]) -> None:
    node = value.value
    if isinstance(node, str):
        interval = parse_date_range(node)
        if interval:
            into.append(DateEntry(code, to_micros(interval[0]), to_micros(interval[1]), group))
    elif not isinstance(node, dict):
        return  # a number or a boolean: a SearchParameter stored at run time may select one
    elif value.type == "Timing" or "event" in node or "repeat" in node:
        _timing(code, node, group, into)
    else:  # Period
        start = parse_date_range(node["start"]) if isinstance(node.get("start"), str) else None
        end = parse_date_range(node["end"]) if isinstance(node.get("end"), str) else None
        if start or end:
            low = to_micros(start[0]) if start else None
            into.append(DateEntry(code, low, to_micros(end[1]) if end else None, group))


def _timing(code: str, node: dict[str, Any], group: int, into: list[IndexEntry]) -> None:
    """Only a Timing's outer limits count (search.html#date): from its first event or bounds
    start to its last event or bounds end."""
    ranges = [
        parse_date_range(event) for event in node.get("event") or [] if isinstance(event, str)
    ]
    lows = [to_micros(r[0]) for r in ranges if r]
    highs = [to_micros(r[1]) for r in ranges if r]
    repeat = node.get("repeat")
    bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
    if isinstance(bounds, dict):
        start = parse_date_range(bounds["start"]) if isinstance(bounds.get("start"), str) else None
        end = parse_date_range(bounds["end"]) if isinstance(bounds.get("end"), str) else None
        if start:
            lows.append(to_micros(start[0]))
        if end:
            highs.append(to_micros(end[1]))
    if lows or highs:
        into.append(
            DateEntry(code, min(lows) if lows else None, max(highs) if highs else None, group)
        )


def _numbers(code: str, value: Value, group: int, into: list[IndexEntry]) -> None:
    node = value.value
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        into.append(NumberEntry(code, float(node), group))


def _quantities(code: str, value: Value, group: int, into: list[IndexEntry]) -> None:
    node = value.value
    if isinstance(node, dict) and isinstance(node.get("value"), (int, float)):
        number = float(node["value"])
        system, unit_code = node.get("system"), node.get("code") or node.get("unit")
        if "currency" in node:  # Money
            system, unit_code = "urn:iso:std:iso:4217", node["currency"]
        converted = None
        if system == UCUM and isinstance(node.get("code"), str):
            converted = canonical(number, node["code"])
        canonical_value, canonical_code = converted if converted else (None, None)
        into.append(
            QuantityEntry(code, number, system, unit_code, canonical_value, canonical_code, group)
        )


def _references(code: str, value: Value, group: int, into: list[IndexEntry]) -> None:
    node = value.value
    text = node.get("reference") if isinstance(node, dict) else node
    if isinstance(node, dict) and isinstance(node.get("identifier"), dict):
        identifier = Value(node["identifier"], "Identifier")
        _tokens(f"{code}:identifier", identifier, group, into)
    if not isinstance(text, str) or text.startswith("#"):
        return
    match = _RELATIVE.fullmatch(text)
    if match and not text.startswith(("urn:", "http:", "https:")):
        into.append(ReferenceEntry(code, match.group(1), match.group(2), None, group))
    else:
        into.append(ReferenceEntry(code, None, None, text, group))


def _uris(code: str, value: Value, group: int, into: list[IndexEntry]) -> None:
    if isinstance(value.value, str):
        into.append(UriEntry(code, value.value, group))


_EXTRACTORS: dict[str, Callable[[str, Value, int, list[IndexEntry]], None]] = {
    "string": _strings,
    "token": _tokens,
    "date": _dates,
    "number": _numbers,
    "quantity": _quantities,
    "reference": _references,
    "uri": _uris,
}
