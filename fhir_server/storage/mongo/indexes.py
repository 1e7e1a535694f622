"""The indexes of the MongoDB store, one per query shape (created idempotently at open).

Every search value index leads with the resource type ``t`` and then the element's ``p``
(parameter code), so one index range holds one parameter of one type, as SQLite's ``pid``
does; the value fields follow in the order the shapes compare them (equality first, then
the range). All are multikey over one array each, which MongoDB allows, and an
``$elemMatch`` on that array uses the compound bounds. ``tests/contract/test_mongo_plans.py``
checks the winning plans with ``explain()`` when a real server is configured.
"""

from __future__ import annotations

from typing import Any

IndexSpec = tuple[list[tuple[str, Any]], dict[str, Any]]

VERSION_INDEXES: list[IndexSpec] = [
    ([("t", 1), ("i", 1), ("v", 1)], {"name": "version_of_resource", "unique": True}),
    ([("seq", -1)], {"name": "system_history"}),
    ([("t", 1), ("seq", -1)], {"name": "type_history"}),
    ([("t", 1), ("i", 1), ("seq", -1)], {"name": "instance_history"}),
]

CURRENT_INDEXES: list[IndexSpec] = [
    ([("k", 1)], {"name": "creation_order"}),
    ([("t", 1), ("k", 1)], {"name": "type_creation_order"}),
    ([("t", 1), ("i", 1)], {"name": "type_id"}),
    ([("t", 1), ("lu", 1)], {"name": "last_updated"}),
    ([("t", 1), ("tok.p", 1), ("tok.c", 1), ("tok.s", 1)], {"name": "token"}),
    ([("t", 1), ("tok.p", 1), ("tok.d", 1)], {"name": "token_text"}),
    ([("t", 1), ("str.p", 1), ("str.n", 1)], {"name": "string"}),
    ([("t", 1), ("str.p", 1), ("str.e", 1)], {"name": "string_exact"}),
    ([("t", 1), ("dt.p", 1), ("dt.lo", 1), ("dt.hi", 1)], {"name": "date_low"}),
    ([("t", 1), ("dt.p", 1), ("dt.hi", 1), ("dt.lo", 1)], {"name": "date_high"}),
    ([("t", 1), ("num.p", 1), ("num.v", 1)], {"name": "number"}),
    ([("t", 1), ("qty.p", 1), ("qty.v", 1)], {"name": "quantity"}),
    ([("t", 1), ("qty.p", 1), ("qty.cc", 1), ("qty.cv", 1)], {"name": "quantity_canonical"}),
    ([("t", 1), ("ref.p", 1), ("ref.ti", 1), ("ref.tt", 1)], {"name": "reference"}),
    ([("ref.tt", 1), ("ref.ti", 1)], {"name": "reference_target"}),
    ([("t", 1), ("ref.p", 1), ("ref.u", 1)], {"name": "reference_url"}),
    ([("t", 1), ("uri.p", 1), ("uri.u", 1)], {"name": "uri"}),
    ([("t", 1), ("ftn", 1)], {"name": "narrative_words"}),
    ([("t", 1), ("ftc", 1)], {"name": "content_words"}),
    ([("cl", 1)], {"name": "claims"}),  # the keys a resource claims (storage/base.py, Claim)
]
