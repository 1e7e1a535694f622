"""Writes of the current group commit that the index tables cannot show yet, for the
conditions and guards of the writes after them (store.py, ``_write_jobs``).

Two kinds: those written earlier in the transaction, whose index rows still wait in the
index log (index_log.py), so the index tables lack them or hold their previous version;
and those queued to be written with the next statement batch, which the database has not
seen at all. A condition that ``entry_match`` can judge is asked of the index for
everything else and judged from these records' own entries for them. The writer then
applies the log once per transaction and type, and writes a run of conditional creates in
one batch, instead of applying the log and writing for each conditional create.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import orjson

from fhir_server.search import entry_match
from fhir_server.search.plan import SearchPlan
from fhir_server.search.values import IndexEntry
from fhir_server.storage.base import IndexOf, WriteRecord

Match = tuple[str, str, int]  # (resource type, id, version)


class FreshWrites:
    def __init__(self, index_of: IndexOf | None = None) -> None:
        self._newest: dict[tuple[str, str], WriteRecord] = {}
        self._index_of = index_of  # the entries of a record indexed later
        # ... computed once per record: a run of conditional writes asks every record of
        # the transaction's types again at each condition
        self._computed: dict[tuple[str, str], tuple[WriteRecord, Sequence[IndexEntry]]] = {}

    def add(
        self, jobs: Sequence[Sequence[WriteRecord]], outcomes: Sequence[BaseException | None]
    ) -> None:
        """Jobs written by one ``write_batch``; those it refused (``outcomes``) wrote nothing."""
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome is None:
                self.queue(job)

    def queue(self, job: Sequence[WriteRecord]) -> None:
        for record in job:
            self._newest[(record.resource_type, record.resource_id)] = record

    def clear(self) -> None:
        self._newest.clear()
        self._computed.clear()

    def only_creates(self, types: Collection[str]) -> bool:
        """No record of ``types`` replaces or deletes a resource: until written, such a
        record and the index would disagree about a resource that exists."""
        return all(
            record.previous_version == 0 and not record.deleted
            for (resource_type, _), record in self._newest.items()
            if resource_type in types
        )

    def keys(self, plan: SearchPlan) -> set[tuple[str, str]]:
        """The resources of ``plan``'s type held here: what the index says of them is old."""
        return {key for key in self._newest if key[0] in plan.resource_types}

    def matching(self, plan: SearchPlan) -> list[Match]:
        """The records here, not deletions, that match ``plan``."""
        return [
            (record.resource_type, record.resource_id, record.version_id)
            for key, record in self._newest.items()
            if key[0] in plan.resource_types
            and not record.deleted
            and entry_match.matches(
                plan, record.resource_type, record.resource_id, self._entries(record)
            )
        ]

    def _entries(self, record: WriteRecord) -> Sequence[IndexEntry]:
        if not record.index_later or record.body is None or self._index_of is None:
            return record.entries
        key = (record.resource_type, record.resource_id)
        computed = self._computed.get(key)
        if computed is None or computed[0] is not record:  # none yet, or an older version's
            computed = (record, self._index_of(orjson.loads(record.body))[0])
            self._computed[key] = computed
        return computed[1]


def judged(records: Sequence[WriteRecord]) -> bool:
    """Whether every condition and guard of ``records`` can be judged from entries."""
    plans = [guard.plan for record in records for guard in record.guards]
    plans += [record.unless_exists for record in records if record.unless_exists is not None]
    return all(entry_match.supports(plan) for plan in plans)
