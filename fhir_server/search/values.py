"""Typed search values, as extracted at write time and compared at search time.

Storage backends persist and query these; they never evaluate FHIRPath themselves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenEntry:
    """One token search value (system, code) of a search parameter."""

    param: str
    system: str | None
    code: str
