"""Index entries of the server's own AuditEvents, composed piece by piece.

A batched read AuditEvent names up to a hundred resources and patients, each as one
``entity``. Running the generic indexer over it walks every entity once per entity
parameter (``entity``, ``entity-type``, ``entity-role``, ``entity-name``, ``patient``):
about 40 µs of CPU per read audited, which is what audit cost a read (issue 6: keep reads
cheap). Those parameters, like every other AuditEvent parameter, look at one part of the
event at a time, so an event's entries are the union of the entries of three partial
AuditEvents: one holding what changes from event to event (``id``, ``meta``,
``recorded``), one holding the rest but the entities (the requestor's agents, the source,
the type: the same for all of a requestor's events), and one per entity. The last two
recur (a requestor's reads, the server's writes), so they are remembered. An entity seen for
the first time (the resource a write just created) is composed from its shape: the same
entity naming a placeholder id, indexed once per resource type and role, with the real id
put in its reference entries (a Synthea transaction's event, which names hundreds: 32 ->
14 µs per entity, building the event included). The generic
indexer stays the one definition of what an entry is (it computes every piece, and
``rofecare reindex`` gives the same result); ``tests/unit/test_audit_index.py`` checks the
composition against it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.search.indexer import normalize
from fhir_server.search.values import FullText, IndexEntry, ReferenceEntry
from fhir_server.services.search_index import SearchIndex

CACHE_SIZE = 20_000
# What changes from one event of a requestor to the next; the rest (agents, source, type,
# subtype, outcome) is indexed once and remembered.
VARYING = frozenset({"id", "meta", "recorded", "entity"})

# An entity's literal reference as the indexer splits it (search/indexer.py, _RELATIVE)
_PLAIN_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
_MARK = "rofecare-entity-id-mark"  # the id of an entity shape; a valid id of its own

Composed = tuple[dict[IndexEntry, None], str]  # entries as dict keys, the words
"""Entries kept as a dict so that an event merges them with ``dict.update``, which reuses
the stored hashes: hashing four dataclass entries per entity per event was a third of the
cost of composing."""


class AuditEventIndexer:
    def __init__(self, index: SearchIndex) -> None:
        self._index = index
        self._registry = index.registry
        self._entities: OrderedDict[bytes, Composed] = OrderedDict()  # entity JSON ->
        # entity JSON with _MARK for its id -> its entries, None when the mark shows
        # elsewhere than in a reference's id (a parameter over the reference's text)
        self._shapes: OrderedDict[bytes, Composed | None] = OrderedDict()
        self._skeletons: OrderedDict[bytes, tuple[Composed, str]] = OrderedDict()  # + narrative
        # One object per distinct entry: every entity has the same entity-type and
        # entity-role entries, and a dict meeting an equal key that is not the same object
        # calls the dataclass __eq__ in Python (a fifth of the cost of composing).
        self._canonical: dict[IndexEntry, IndexEntry] = {}

    def entries(self, event: dict[str, Any]) -> tuple[tuple[IndexEntry, ...], FullText | None]:
        if self._index.registry is not self._registry:  # SearchParameters changed
            self._registry = self._index.registry
            self._entities.clear()
            self._shapes.clear()
            self._skeletons.clear()
            self._canonical.clear()
        entities = event.get("entity")
        if not self._index.enabled or not isinstance(entities, list) or not entities:
            return self._index.entries(event)
        varying = {key: value for key, value in event.items() if key in VARYING}
        del varying["entity"]
        varying["resourceType"] = event["resourceType"]
        entries, text = self._index.entries(varying)
        found: dict[IndexEntry, None] = dict.fromkeys(entries)
        # _content matches words, not counts: fifty patients' identical codings are
        # written once, not fifty times into the full-text index.
        words: dict[str, None] = {text.content: None} if text is not None else {}
        (skeleton_entries, skeleton_words), narrative = self._skeleton(event)
        found.update(skeleton_entries)
        words[skeleton_words] = None
        for entity in entities:
            entity_entries, entity_words = self._entity(entity)
            found.update(entity_entries)
            words[entity_words] = None
        content = normalize(" ".join(word for word in words if word))
        return tuple(found), FullText(narrative, content)

    def _skeleton(self, event: dict[str, Any]) -> tuple[Composed, str]:
        """The entries and words of what the event has besides ``VARYING``, and its
        narrative."""
        skeleton = {key: value for key, value in event.items() if key not in VARYING}
        key = orjson.dumps(skeleton)  # the same event shape gives the same key
        cached = self._skeletons.get(key)
        if cached is not None:
            self._skeletons.move_to_end(key)
            return cached
        entries, text = self._index.entries(skeleton)
        words = text.content if text is not None else ""
        narrative = text.narrative if text is not None else ""
        computed = ((self._interned(entries), words), narrative)
        _remember(self._skeletons, key, computed)
        return computed

    def _entity(self, entity: dict[str, Any]) -> Composed:
        key = orjson.dumps(entity)  # the same entity, built by events/audit.py, same key
        cached = self._entities.get(key)
        if cached is not None:
            self._entities.move_to_end(key)
            return cached
        computed = self._from_shape(entity) or self._indexed(entity)
        _remember(self._entities, key, computed)
        return computed

    def _indexed(self, entity: dict[str, Any]) -> Composed:
        alone = {"resourceType": "AuditEvent", "entity": [entity]}
        entries, text = self._index.entries(alone)
        return self._interned(entries), text.content if text is not None else ""

    def _from_shape(self, entity: dict[str, Any]) -> Composed | None:
        """The entries of an entity whose ``what`` is only a relative reference, from those
        of its shape; None for any other entity."""
        what = entity.get("what")
        reference = what.get("reference") if isinstance(what, dict) and len(what) == 1 else None
        match = _PLAIN_REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
        if match is None:
            return None
        shape = {**entity, "what": {"reference": f"{match.group(1)}/{_MARK}"}}
        key = orjson.dumps(shape)
        if key in self._shapes:
            self._shapes.move_to_end(key)
            template = self._shapes[key]
        else:
            template = _template(self._indexed(shape))
            _remember(self._shapes, key, template)
        if template is None:
            return None
        entries, words = template
        resource_id = match.group(2)
        return {
            (
                ReferenceEntry(entry.param, entry.target_type, resource_id, entry.url, entry.group)
                if isinstance(entry, ReferenceEntry) and entry.target_id == _MARK
                else entry
            ): None
            for entry in entries
        }, words

    def _interned(self, entries: Iterable[IndexEntry]) -> dict[IndexEntry, None]:
        if len(self._canonical) > 4 * CACHE_SIZE:
            self._canonical.clear()  # only speed depends on it: equal entries stay equal
        canonical = self._canonical
        return dict.fromkeys(canonical.setdefault(entry, entry) for entry in entries)


def _template(composed: Composed) -> Composed | None:
    """``composed`` if the shape's id shows only as the id of relative reference entries
    (then any id can take its place), else None."""
    entries, words = composed
    mark = _MARK.lower()
    if mark in words.lower():
        return None
    for entry in entries:
        for name, value in entry._asdict().items():
            if not isinstance(value, str) or mark not in value.lower():
                continue
            if not (isinstance(entry, ReferenceEntry) and name == "target_id" and value == _MARK):
                return None
    return composed


def _remember(cache: OrderedDict[bytes, Any], key: bytes, value: Any) -> None:
    cache[key] = value
    if len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
