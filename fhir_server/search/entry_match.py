"""Whether a resource's own index entries satisfy a search plan, without asking the store.

Why: a write transaction checks the conditions of conditional creates and the hospital's
guards against every resource written before it, including those written earlier in the
same transaction. In the SQLite store their rows still wait in the index log, and applying
the log for each conditional write cost a dozen statements per write (storage/sqlite/
store.py). Judged here from the entries the write path computed anyway, they need none.

Only plain shapes are judged: tokens (``identifier=system|value``, ``code``, ``|code``,
``system|``), ``_id``, and strings (prefix, ``:exact``, ``:contains``), combined with AND
and OR, on one resource type. That covers what conditional creates send (Synthea's
``identifier=...``) and the medical record number guard. ``supports`` says no to anything
else, and the caller asks the index instead. Each judged shape means exactly what the
backends' predicates mean (storage/sqlite/predicates.py); tests/unit/test_entry_match.py
runs the same plans through both.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.search.plan import (
    AnyOf,
    IdMatch,
    Predicate,
    SearchPlan,
    StringMatch,
    TokenMatch,
)
from fhir_server.search.values import IndexEntry, StringEntry, TokenEntry

_JUDGED = (TokenMatch, IdMatch, StringMatch)


def supports(plan: SearchPlan) -> bool:
    """Whether ``matches`` can judge ``plan``."""
    return len(plan.resource_types) == 1 and all(
        isinstance(predicate, _JUDGED) for alternatives in plan.where for predicate in alternatives
    )


def matches(
    plan: SearchPlan, resource_type: str, resource_id: str, entries: Iterable[IndexEntry]
) -> bool:
    """Whether the resource with these index entries is a match of ``plan`` (which
    ``supports`` accepts; a deleted resource matches nothing, its caller's concern)."""
    if not supports(plan):
        raise ValueError("a plan entry_match cannot judge; ask the index")
    if plan.resource_types != (resource_type,):
        return False
    held = tuple(entries)
    return all(_any_holds(alternatives, resource_id, held) for alternatives in plan.where)


def _any_holds(alternatives: AnyOf, resource_id: str, entries: tuple[IndexEntry, ...]) -> bool:
    return any(_holds(predicate, resource_id, entries) for predicate in alternatives)


def _holds(predicate: Predicate, resource_id: str, entries: tuple[IndexEntry, ...]) -> bool:
    if isinstance(predicate, IdMatch):
        return resource_id in predicate.ids
    if isinstance(predicate, TokenMatch):
        return any(
            isinstance(entry, TokenEntry)
            and entry.param == predicate.param
            and (predicate.code is None or entry.code == predicate.code)
            and (predicate.system is None or (entry.system or "") == predicate.system)
            for entry in entries
        )
    if isinstance(predicate, StringMatch):
        return any(
            isinstance(entry, StringEntry)
            and entry.param == predicate.param
            and _string_holds(predicate, entry)
            for entry in entries
        )
    raise ValueError(f"entry_match cannot judge {type(predicate).__name__}")


def _string_holds(predicate: StringMatch, entry: StringEntry) -> bool:
    if predicate.mode == "prefix":
        return entry.normalized.startswith(predicate.value)
    if predicate.mode == "contains":
        return predicate.value in entry.normalized
    return entry.exact == predicate.value
