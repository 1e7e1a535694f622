"""The MongoDB document shapes: one document per version, one per current resource.

``versions`` keeps every version (history, vread), keyed ``type/id/version``. ``current``
holds each resource's newest version with its body and its search values, so a read is one
``_id`` lookup and a search one query on one collection. Search values live in the current
document, one array per value type (as the SQLite store has one table per type), each
element naming its parameter: ``{"tok": [{"p": "code", "s": system, "c": code}, ...]}``.
A compound multikey index on ``(t, tok.p, tok.c, ...)`` then answers an ``$elemMatch`` on
one element, which is what makes system and code match in the same Coding.

Both collections carry the resource type and id as fields besides ``_id`` because the shard
key is ``{t: 1, i: "hashed"}``-like (docs/deployment.md): a read or a write names both, so it
goes to one shard; a search names the type only and is scattered.

``k`` is the creation sequence (the ``seq`` of version 1): stable across versions, it orders
results without ``_sort`` and is the paging cursor, as ``rkey`` is in SQLite.
"""

from __future__ import annotations

from typing import Any

from fhir_server.model.instant import from_micros, to_micros
from fhir_server.search.indexer import words
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
from fhir_server.storage.base import Method, StoredVersion, WriteRecord

NEGATIVE_INFINITY = -(2**62)  # an open Period start, as in the SQLite store
POSITIVE_INFINITY = 2**62

ARRAYS = {
    # search type: (document array, value fields)
    "token": ("tok", ("s", "c", "d")),  # p: the parameter's code, in every element
    "string": ("str", ("n", "e")),
    "date": ("dt", ("lo", "hi")),
    "number": ("num", ("v",)),
    "quantity": ("qty", ("v", "s", "c", "cv", "cc")),
    "reference": ("ref", ("tt", "ti", "u")),
    "uri": ("uri", ("u",)),
}
"""Search type -> (array field of the current document, fields of its elements)."""


def version_id(resource_type: str, resource_id: str, version: int) -> str:
    return f"{resource_type}/{resource_id}/{version}"


def current_id(resource_type: str, resource_id: str) -> str:
    return f"{resource_type}/{resource_id}"


def version_document(record: WriteRecord, seq: int) -> dict[str, Any]:
    return {
        "_id": version_id(record.resource_type, record.resource_id, record.version_id),
        "t": record.resource_type,
        "i": record.resource_id,
        "v": record.version_id,
        "seq": seq,
        "lu": to_micros(record.last_updated),
        "m": record.method,
        "b": record.body,
    }


def current_document(record: WriteRecord, seq: int, key: int) -> dict[str, Any]:
    """The current document of ``record``'s resource; a deletion keeps no search values."""
    document: dict[str, Any] = {
        "_id": current_id(record.resource_type, record.resource_id),
        "t": record.resource_type,
        "i": record.resource_id,
        "v": record.version_id,
        "seq": seq,
        "k": key,
        "del": record.deleted,
        "lu": to_micros(record.last_updated),
        "m": record.method,
        "b": record.body,
    }
    if not record.deleted:
        document.update(search_fields(record.entries, record.full_text))
        if record.claims:
            document["cl"] = list(record.claims)  # storage/base.py, Claim
    return document


def search_fields(entries: tuple[IndexEntry, ...], full_text: FullText | None) -> dict[str, Any]:
    """The arrays of search values, the sort keys, and the full-text words of a resource."""
    arrays: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in ARRAYS.values()}
    composites: dict[tuple[str, int], dict[str, Any]] = {}
    sort_keys: dict[str, dict[str, Any]] = {}
    for entry in entries:
        kind, element = _element(entry)
        if entry.group:  # a component of a composite item: kept with the item's others
            code, _, index = entry.param.rpartition("$")
            item = composites.setdefault((code, entry.group), {"p": code})
            item.setdefault(f"c{index}", []).append(element)
            continue
        arrays[ARRAYS[kind][0]].append(element)
        ascending, descending = _sort_values(kind, element)
        if ascending is not None:
            keys = sort_keys.setdefault(entry.param, {"a": ascending, "d": descending})
            keys["a"] = min(keys["a"], ascending)
            keys["d"] = max(keys["d"], descending)
    fields: dict[str, Any] = {name: values for name, values in arrays.items() if values}
    if composites:
        fields["cmp"] = list(composites.values())
    fields["sk"] = sort_keys
    if full_text is not None:
        fields["ftn"] = _distinct_words(full_text.narrative)
        fields["ftc"] = _distinct_words(full_text.content)
    return fields


def _distinct_words(text: str) -> list[str]:
    return sorted(set(words(text))) if text else []


def _element(entry: IndexEntry) -> tuple[str, dict[str, Any]]:
    base: dict[str, Any] = {"p": entry.param}
    if isinstance(entry, TokenEntry):
        base.update(s=entry.system or "", c=entry.code)
        if entry.display is not None:
            base["d"] = entry.display
        return "token", base
    if isinstance(entry, StringEntry):
        return "string", {**base, "n": entry.normalized, "e": entry.exact}
    if isinstance(entry, DateEntry):
        low = NEGATIVE_INFINITY if entry.low is None else entry.low
        high = POSITIVE_INFINITY if entry.high is None else entry.high
        return "date", {**base, "lo": low, "hi": high}
    if isinstance(entry, NumberEntry):
        return "number", {**base, "v": entry.value}
    if isinstance(entry, QuantityEntry):
        base.update(v=entry.value, s=entry.system, c=entry.code)
        if entry.canonical_code is not None:
            base.update(cv=entry.canonical_value, cc=entry.canonical_code)
        return "quantity", base
    if isinstance(entry, ReferenceEntry):
        return "reference", {**base, "tt": entry.target_type, "ti": entry.target_id, "u": entry.url}
    assert isinstance(entry, UriEntry)
    return "uri", {**base, "u": entry.uri}


def _sort_values(kind: str, element: dict[str, Any]) -> tuple[Any, Any]:
    """(ascending key, descending key) of one value, as the SQLite store sorts: dates by
    their low end ascending and high end descending, references by id."""
    if kind == "token":  # a code-less token (a bare system) does not sort
        return (element["c"], element["c"]) if element["c"] else (None, None)
    if kind == "string":
        return element["n"], element["n"]
    if kind == "date":
        return element["lo"], element["hi"]
    if kind in ("number", "quantity"):
        return element["v"], element["v"]
    if kind == "reference":
        target = element.get("ti")
        return target, target
    return element["u"], element["u"]


def stored_version(document: dict[str, Any]) -> StoredVersion:
    method: Method = document["m"]
    body = document.get("b")
    return StoredVersion(
        resource_type=document["t"],
        resource_id=document["i"],
        version_id=int(document["v"]),
        last_updated=from_micros(int(document["lu"])),
        method=method,
        body=bytes(body) if body is not None else None,
    )
