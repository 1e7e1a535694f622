"""The terminology hook: what validation and search ask of code systems and value sets.

The core never imports the top-level ``terminology`` package (DESIGN.md: plug-ins reach the
core, not the reverse); ``app.py`` loads it by name at start-up and hands its provider to
the services as this protocol. Every method is synchronous and answers from memory: a
required binding is checked on every write, so a lookup must cost microseconds, never I/O.

Canonical URLs may carry a version (``url|version``, https://hl7.org/fhir/R4/references.html#canonical);
a provider answers for the version it holds and treats an unknown version as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CodeCheck:
    """The answer of ``validate_code``: ``valid``, and why not (``message``), with the
    code's preferred display when it is known (``$validate-code``'s ``display`` output)."""

    valid: bool
    message: str | None = None
    display: str | None = None


class Terminology(Protocol):
    def knows_value_set(self, url: str) -> bool:
        """True when ``url`` names a value set this provider can check codes against."""
        ...

    def validate_code(
        self, value_set: str, system: str | None, code: str, display: str | None = None
    ) -> CodeCheck | None:
        """Is ``system|code`` in ``value_set``? ``system`` None: a ``code`` element, whose
        system is implied by the binding (any system of the value set may hold it).
        ``display``, when given, must be one of the code's displays. None when the value
        set is unknown (the caller decides what an unknown value set means)."""
        ...

    def validate_in_system(
        self, system: str, code: str, display: str | None = None
    ) -> CodeCheck | None:
        """Is ``code`` a code of ``system``? None when the code system is unknown or not
        held completely here (a fragment or an example system cannot refuse a code)."""
        ...

    def value_set_codes(self, value_set: str) -> frozenset[tuple[str, str]] | None:
        """Every (system, code) of the value set's expansion, for the ``:in`` and
        ``:not-in`` search modifiers; None when unknown or not enumerable (an intensional
        value set over a code system not held here)."""
        ...

    def descendants(self, system: str, code: str) -> frozenset[str] | None:
        """``code`` and every code it subsumes in ``system`` (``:below``); None when the
        system has no hierarchy here or does not hold the code."""
        ...

    def ancestors(self, system: str, code: str) -> frozenset[str] | None:
        """``code`` and every code that subsumes it in ``system`` (``:above``)."""
        ...
