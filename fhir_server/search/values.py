"""Typed search values, as extracted at write time and compared at search time.

Storage backends persist and query these; they never evaluate FHIRPath themselves.
Each kind follows its R4 search type (https://hl7.org/fhir/R4/search.html#ptypes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenEntry:
    """One token search value (system, code) of a search parameter."""

    param: str
    system: str | None
    code: str


@dataclass(frozen=True)
class StringEntry:
    """``normalized``: lower case without accents (default and :contains); ``exact`` as written."""

    param: str
    normalized: str
    exact: str


@dataclass(frozen=True)
class DateEntry:
    """The instant range [low, high) the value covers at its precision, in epoch microseconds.

    An open end (a Period without ``end``) is None.
    """

    param: str
    low: int | None
    high: int | None


@dataclass(frozen=True)
class NumberEntry:
    param: str
    value: float


@dataclass(frozen=True)
class QuantityEntry:
    param: str
    value: float
    system: str | None
    code: str | None


@dataclass(frozen=True)
class ReferenceEntry:
    """A literal reference: ``target_type``/``target_id`` when relative, ``url`` otherwise."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass(frozen=True)
class UriEntry:
    param: str
    uri: str


IndexEntry = (
    TokenEntry | StringEntry | DateEntry | NumberEntry | QuantityEntry | ReferenceEntry | UriEntry
)
