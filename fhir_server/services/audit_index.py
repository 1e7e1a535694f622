"""Index entries of the server's own AuditEvents, composed entity by entity.

A batched read AuditEvent names up to fifty resources and patients, each as one
``entity``. Running the generic indexer over it walks every entity once per entity
parameter (``entity``, ``entity-type``, ``entity-role``, ``entity-name``, ``patient``):
about 40 µs of CPU per read audited, which is what audit cost a read (issue 6: keep reads
cheap). Those parameters look at one entity at a time, so an event's entries are the
entries of the event without its entities, plus, for each entity, the entries of an
AuditEvent holding only that entity; the same patients and resources are read again and
again, so those are remembered. The generic indexer stays the one definition of what an
entry is (it computes every piece, and ``rofecare reindex`` gives the same result);
``tests/unit/test_audit_index.py`` checks the composition against it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from fhir_server.search.indexer import normalize
from fhir_server.search.values import FullText, IndexEntry
from fhir_server.services.search_index import SearchIndex

CACHE_SIZE = 20_000


class AuditEventIndexer:
    def __init__(self, index: SearchIndex) -> None:
        self._index = index
        self._registry = index.registry
        # entity JSON -> (its entries as dict keys, its words); a dict so that an event
        # merges them with dict.update, which reuses the stored hashes: hashing four
        # dataclass entries per entity per event was a third of the cost of composing.
        self._entities: OrderedDict[bytes, tuple[dict[IndexEntry, None], str]] = OrderedDict()

    def entries(self, event: dict[str, Any]) -> tuple[tuple[IndexEntry, ...], FullText | None]:
        if self._index.registry is not self._registry:  # SearchParameters changed
            self._registry = self._index.registry
            self._entities.clear()
        entities = event.get("entity")
        if not self._index.enabled or not isinstance(entities, list) or len(entities) < 2:
            return self._index.entries(event)
        skeleton = {key: value for key, value in event.items() if key != "entity"}
        entries, text = self._index.entries(skeleton)
        found: dict[IndexEntry, None] = dict.fromkeys(entries)
        # _content matches words, not counts: fifty patients' identical codings are
        # written once, not fifty times into the full-text index.
        words: dict[str, None] = {text.content: None} if text is not None else {}
        for entity in entities:
            entity_entries, entity_words = self._entity(entity)
            found.update(entity_entries)
            words[entity_words] = None
        narrative = text.narrative if text is not None else ""
        content = normalize(" ".join(word for word in words if word))
        return tuple(found), FullText(narrative, content)

    def _entity(self, entity: dict[str, Any]) -> tuple[dict[IndexEntry, None], str]:
        key = orjson.dumps(entity, option=orjson.OPT_SORT_KEYS)
        cached = self._entities.get(key)
        if cached is not None:
            self._entities.move_to_end(key)
            return cached
        alone = {"resourceType": "AuditEvent", "entity": [entity]}
        entries, text = self._index.entries(alone)
        computed = (dict.fromkeys(entries), text.content if text is not None else "")
        self._entities[key] = computed
        if len(self._entities) > CACHE_SIZE:
            self._entities.popitem(last=False)
        return computed
