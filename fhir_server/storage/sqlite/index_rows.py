"""Index entries -> rows of the typed index tables (schema.INDEX_TABLES)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.search.values import (
    DateEntry,
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

ROW_VALUES: dict[type, tuple[str, Callable[[Any], tuple[Any, ...]]]] = {
    TokenEntry: ("token", lambda e: (e.system or "", e.code, e.display)),
    StringEntry: ("string", lambda e: (e.normalized, e.exact)),
    DateEntry: (
        "date",
        lambda e: (
            NEGATIVE_INFINITY if e.low is None else e.low,
            POSITIVE_INFINITY if e.high is None else e.high,
        ),
    ),
    NumberEntry: ("number", lambda e: (e.value,)),
    QuantityEntry: (
        "quantity",
        lambda e: (e.value, e.system, e.code, e.canonical_value, e.canonical_code),
    ),
    ReferenceEntry: ("reference", lambda e: (e.target_type, e.target_id, e.url)),
    UriEntry: ("uri", lambda e: (e.uri,)),
}
"""Entry class -> (its search type, the values of its row in that type's table)."""


PidFunction = Callable[[str, str, str], int]
"""``pid(resource_type, code, kind)``: the interned id of a search parameter."""


INDEX_TABLE_NAMES = tuple(table for table, _ in INDEX_TABLES.values())
