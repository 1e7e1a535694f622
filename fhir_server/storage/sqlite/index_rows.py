"""Index entries -> rows of the typed index tables (schema.INDEX_TABLES)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from fhir_server.storage.sqlite.schema import (
    INDEX_TABLES,
    NEGATIVE_INFINITY,
    POSITIVE_INFINITY,
)

KIND_OF: dict[type, str] = {
    TokenEntry: "token",
    StringEntry: "string",
    DateEntry: "date",
    NumberEntry: "number",
    QuantityEntry: "quantity",
    ReferenceEntry: "reference",
    UriEntry: "uri",
}


def row_values(entry: IndexEntry) -> tuple[Any, ...]:
    if isinstance(entry, TokenEntry):
        return (entry.system or "", entry.code, entry.display)
    if isinstance(entry, StringEntry):
        return (entry.normalized, entry.exact)
    if isinstance(entry, DateEntry):
        low = NEGATIVE_INFINITY if entry.low is None else entry.low
        high = POSITIVE_INFINITY if entry.high is None else entry.high
        return (low, high)
    if isinstance(entry, NumberEntry):
        return (entry.value,)
    if isinstance(entry, QuantityEntry):
        return (
            entry.value,
            entry.system,
            entry.code,
            entry.canonical_value,
            entry.canonical_code,
        )
    if isinstance(entry, ReferenceEntry):
        return (entry.target_type, entry.target_id, entry.url)
    return (entry.uri,)


PidFunction = Callable[[str, str, str], int]
"""``pid(resource_type, code, kind)``: the interned id of a search parameter."""


INDEX_TABLE_NAMES = tuple(table for table, _ in INDEX_TABLES.values())
