"""Typed search values, as extracted at write time and compared at search time.

Storage backends persist and query these; they never evaluate FHIRPath themselves.
Each kind follows its R4 search type (https://hl7.org/fhir/R4/search.html#ptypes).

``param`` is the search parameter's code; the components of a composite parameter are
stored under ``code$index`` with a ``group`` number shared by the values of one composite
item, so ``component-code-value-quantity`` matches only when one component holds both.

The entries are named tuples rather than frozen dataclasses: an indexed create builds and
hashes about fifty of them, and a tuple is built in 0.26 µs against 0.77 and hashed in
0.07 against 0.20 (this machine). Their equality is a tuple's, so two kinds with equal
fields would be equal; that never happens in one resource, where a parameter's code
(``code$i`` for a composite's components) has one search type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class TokenEntry(NamedTuple):
    """One token (system, code); ``display`` is the normalized Coding.display or
    CodeableConcept.text that ``:text`` searches."""

    param: str
    system: str | None
    code: str
    display: str | None = None
    group: int = 0


class StringEntry(NamedTuple):
    """``normalized``: lower case without accents (default and :contains); ``exact`` as written."""

    param: str
    normalized: str
    exact: str
    group: int = 0


class DateEntry(NamedTuple):
    """The instant range [low, high) the value covers at its precision, in epoch microseconds.

    An open end (a Period without ``start`` or ``end``) is None.
    """

    param: str
    low: int | None
    high: int | None
    group: int = 0


class NumberEntry(NamedTuple):
    param: str
    value: float
    group: int = 0


class QuantityEntry(NamedTuple):
    """A quantity as written, and in canonical UCUM units when the unit converts."""

    param: str
    value: float
    system: str | None
    code: str | None
    canonical_value: float | None = None
    canonical_code: str | None = None
    group: int = 0


class ReferenceEntry(NamedTuple):
    """A literal reference: ``target_type``/``target_id`` when relative, ``url`` otherwise."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None
    group: int = 0


class UriEntry(NamedTuple):
    param: str
    uri: str
    group: int = 0


IndexEntry = (
    TokenEntry | StringEntry | DateEntry | NumberEntry | QuantityEntry | ReferenceEntry | UriEntry
)


@dataclass(frozen=True)
class FullText:
    """What ``_text`` (the narrative) and ``_content`` (every string value) search."""

    narrative: str
    content: str
