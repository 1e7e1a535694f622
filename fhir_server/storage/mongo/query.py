"""Search plan predicates -> MongoDB filters on the ``current`` collection.

Each value predicate is one ``$elemMatch`` on its type's array (documents.ARRAYS), so every
condition applies to one value: ``code=http://loinc.org|8867-4`` needs system and code in the
same Coding, ``date=ge2020&date=lt2021`` (two parameters) may be met by two values, as the
spec says. A chain or a reverse chain (``_has``) runs its inner search first and matches the
ids it found, as the SQLite store's subquery does: MongoDB has no join a filter can use.
Values are always data in the filter document, never operators: a ``$`` in a search value
is compared as text, since no user string ever becomes a key.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.search.plan import (
    AnyOf,
    Bound,
    Bounds,
    Chain,
    CompartmentMatch,
    Composite,
    Has,
    IdMatch,
    Missing,
    Not,
    Predicate,
    RangeMatch,
    ReferenceMatch,
    StringMatch,
    TextMatch,
    TokenMatch,
    TokenText,
    UriMatch,
    Where,
)
from fhir_server.storage.mongo.documents import ARRAYS

TOP = "\U0010ffff"  # sorts after every character: a prefix p matches [p, p + TOP)
NOTHING: dict[str, Any] = {"_id": {"$in": []}}
LAST_UPDATED_HIGH_US = 1_000  # _lastUpdated is kept to the millisecond: [lu, lu + 1 ms)
_OPERATORS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_RANGE_FIELDS = {
    "date": {"low": "lo", "high": "hi"},
    "number": {"value": "v"},
    "quantity": {"value": "v", "canonical_value": "cv"},
}

Finder = Callable[[dict[str, Any], dict[str, int]], Awaitable[list[dict[str, Any]]]]
"""(filter, projection) -> the current documents matching, for chains and reverse chains."""


def live(resource_types: tuple[str, ...]) -> dict[str, Any]:
    """Current, not deleted, of these types (every type when none is named)."""
    condition: dict[str, Any] = {"del": False}
    if len(resource_types) == 1:
        condition["t"] = resource_types[0]
    elif resource_types:
        condition["t"] = {"$in": list(resource_types)}
    return condition


class MqlBuilder:
    """Compiles a plan's conditions; ``find`` runs the inner searches of chains."""

    def __init__(self, find: Finder) -> None:
        self._find = find

    async def where(self, where: Where, scope: tuple[str, ...]) -> dict[str, Any]:
        parts = [await self.any_of(alternatives, scope) for alternatives in where]
        return _all(parts)

    async def any_of(self, alternatives: AnyOf, scope: tuple[str, ...]) -> dict[str, Any]:
        if not alternatives:
            return NOTHING
        parts = [await self.predicate(predicate, scope) for predicate in alternatives]
        return parts[0] if len(parts) == 1 else {"$or": parts}

    async def predicate(self, predicate: Predicate, scope: tuple[str, ...]) -> dict[str, Any]:
        if isinstance(predicate, Not):
            return {"$nor": [await self.any_of(predicate.alternatives, scope)]}
        if isinstance(predicate, IdMatch):
            return {"i": {"$in": list(predicate.ids)}}
        if isinstance(predicate, RangeMatch) and predicate.kind == "lastUpdated":
            return _last_updated(predicate.bounds)
        if isinstance(predicate, TextMatch):
            if not predicate.words:
                return NOTHING
            field = "ftn" if predicate.field == "narrative" else "ftc"
            return {field: {"$all": list(predicate.words)}}
        if isinstance(predicate, Missing):
            composite, dollar, _ = predicate.param.rpartition("$")
            if dollar:  # a composite's first component: its items are kept whole in ``cmp``
                present = {"cmp": {"$elemMatch": {"p": composite}}}
            else:
                present = {ARRAYS[predicate.kind][0]: {"$elemMatch": {"p": predicate.param}}}
            return {"$nor": [present]} if predicate.missing else present
        if isinstance(predicate, CompartmentMatch):
            target = {"tt": predicate.target_type, "ti": predicate.target_id}
            links = [
                {"t": owner, "ref": {"$elemMatch": {"p": code, **target}}}
                for owner, code in predicate.links
            ]
            return {"$or": links} if links else NOTHING
        if isinstance(predicate, Chain):
            return await self._chain(predicate)
        if isinstance(predicate, Has):
            return await self._has(predicate, scope)
        if isinstance(predicate, Composite):
            return _composite(predicate)
        array, element = value_condition(predicate)
        return {array: {"$elemMatch": element}}

    async def _chain(self, chain: Chain) -> dict[str, Any]:
        inner = await self.where(chain.where, (chain.target_type,))
        targets = await self._find(_all([live((chain.target_type,)), inner]), {"i": 1})
        ids = sorted({document["i"] for document in targets})
        element = {"p": chain.param, "tt": chain.target_type, "ti": {"$in": ids}}
        return {"ref": {"$elemMatch": element}}

    async def _has(self, has: Has, scope: tuple[str, ...]) -> dict[str, Any]:
        inner = await self.where(has.where, (has.source_type,))
        sources = await self._find(_all([live((has.source_type,)), inner]), {"ref": 1})
        pointed: dict[str, set[str]] = {}
        for document in sources:
            for reference in document.get("ref", ()):
                target_type, target_id = reference.get("tt"), reference.get("ti")
                if reference.get("p") != has.param or target_type is None or target_id is None:
                    continue
                if not scope or target_type in scope:
                    pointed.setdefault(target_type, set()).add(target_id)
        alternatives = [
            {"t": target_type, "i": {"$in": sorted(ids)}} for target_type, ids in pointed.items()
        ]
        if not alternatives:
            return NOTHING
        return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def value_condition(predicate: Predicate) -> tuple[str, dict[str, Any]]:
    """(array, condition on one of its elements) of a value predicate."""
    if isinstance(predicate, TokenMatch):
        element: dict[str, Any] = {"p": predicate.param}
        if predicate.code is not None:
            element["c"] = predicate.code
        if predicate.system is not None:
            element["s"] = predicate.system
        return "tok", element
    if isinstance(predicate, TokenText):
        return "tok", {"p": predicate.param, "d": _prefix(predicate.text)}
    if isinstance(predicate, StringMatch):
        if predicate.mode == "prefix":
            return "str", {"p": predicate.param, "n": _prefix(predicate.value)}
        if predicate.mode == "contains":
            return "str", {"p": predicate.param, "n": {"$regex": re.escape(predicate.value)}}
        return "str", {"p": predicate.param, "e": predicate.value}
    if isinstance(predicate, RangeMatch):
        return _range(predicate)
    if isinstance(predicate, ReferenceMatch):
        if predicate.url is not None:
            return "ref", {"p": predicate.param, "u": predicate.url}
        element = {"p": predicate.param, "ti": predicate.target_id}
        if predicate.target_type is not None:
            element["tt"] = predicate.target_type
        return "ref", element
    if isinstance(predicate, UriMatch):
        if predicate.mode == "eq":
            return "uri", {"p": predicate.param, "u": predicate.value}
        if predicate.mode == "below":
            return "uri", {"p": predicate.param, "u": _prefix(predicate.value)}
        # :above: the stored uri is a prefix of the value searched for
        prefixes = [predicate.value[:end] for end in range(1, len(predicate.value) + 1)]
        return "uri", {"p": predicate.param, "u": {"$in": prefixes}}
    raise ValueError(f"{type(predicate).__name__} is not a value predicate")


def _range(predicate: RangeMatch) -> tuple[str, dict[str, Any]]:
    array = ARRAYS[predicate.kind][0]
    element: dict[str, Any] = {"p": predicate.param}
    if predicate.canonical:
        element["cc"] = predicate.unit
    else:
        if predicate.system is not None:
            element["s"] = predicate.system
        if predicate.unit is not None:
            element["c"] = predicate.unit
    fields = _RANGE_FIELDS[predicate.kind]
    alternatives = [_bounds(alternative, fields) for alternative in predicate.bounds]
    if len(alternatives) == 1:
        element.update(alternatives[0])
    else:
        element["$or"] = alternatives
    return array, element


def _bounds(bounds: tuple[Bound, ...], fields: dict[str, str]) -> dict[str, Any]:
    return _all([_bound(fields[bound.column], bound.op, bound.value) for bound in bounds])


def _bound(field: str, op: str, value: float) -> dict[str, Any]:
    return {field: {"$eq" if op == "=" else _OPERATORS[op]: value}}


def _last_updated(bounds: Bounds) -> dict[str, Any]:
    """``low`` is the stored instant, ``high`` one millisecond after it: a bound on high is
    the same bound, shifted, on the stored instant."""
    alternatives = [
        _all(
            [
                _bound(
                    "lu",
                    bound.op,
                    bound.value - (LAST_UPDATED_HIGH_US if bound.column == "high" else 0),
                )
                for bound in alternative
            ]
        )
        for alternative in bounds
    ]
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def _composite(composite: Composite) -> dict[str, Any]:
    """All components in one group: one element of ``cmp`` holds each component's values
    (``c0``, ``c1``...) of one composite item (documents.search_fields)."""
    element: dict[str, Any] = {"p": composite.param}
    for index, alternatives in enumerate(composite.components):
        conditions = [value_condition(item)[1] for item in alternatives]
        condition = conditions[0] if len(conditions) == 1 else {"$or": conditions}
        element[f"c{index}"] = {"$elemMatch": condition}
    return {"cmp": {"$elemMatch": element}}


def _prefix(value: str) -> dict[str, str]:
    return {"$gte": value, "$lt": value + TOP}


def _all(parts: list[dict[str, Any]]) -> dict[str, Any]:
    parts = [part for part in parts if part]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}
