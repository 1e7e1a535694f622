"""Claims in a group commit (storage/base.py, ``Claim``): read once, checked job by job in
Python, written with the batch's other rows.

Why like versions (batch.py) and not a statement per job: each statement of the writer
thread waits for the GIL the event loop holds. A batch of Patient registrations, each
claiming its medical record number, reads the claims it checks in one query and writes
them in one insert; a job is judged against the table as read and every job accepted
before it in the batch, so of two jobs claiming one key, the first wins.

Identifier claims: every version holds a key per identifier it is indexed under (system
and value, as the ``identifier`` search parameter indexes them), whatever its type, and a
conditional create on one ``identifier=system|value`` checks that key instead of searching
the index. Why: the index is brought up to date lazily (index_log.py), so each group
commit holding such a create had to apply the pending log rows of its type first, in the
main file's write transaction and with the index file's lock: ~20 statements and a
commit's worth of scattered index pages per group, 0.3 ms of the writer's CPU per create
of Synthea's hospital and practitioner batches (docs/benchmarks.md). A key lookup needs
nothing applied, and sees the creates of every process as soon as they commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from fhir_server.search.plan import SearchPlan, TokenMatch
from fhir_server.search.values import IndexEntry, TokenEntry
from fhir_server.storage.base import Claim, ConditionMatched, GuardViolated, WriteRecord
from fhir_server.storage.sqlite.rows import insert_rows

_KEYS_PER_QUERY = 400

RkeyOf = Callable[[WriteRecord], int]

IDENTIFIER = "identifier"  # the R4 search parameter code every identifier key is taken from
IF_NONE_EXIST = "if-none-exist"
"""``Claim.code`` of a conditional create's condition: another holder is a match
(``ConditionMatched``), not a broken rule."""
SEPARATOR = "\x1f"  # no FHIR string or uri holds a control character below 0x20
_IDENTIFIERS = IDENTIFIER + SEPARATOR  # what every identifier key starts with


def identifier_key(resource_type: str, system: str, value: str) -> str:
    """The key of ``resource_type``'s identifier ``system|value`` (also built in SQL by
    upgrade.py: keep both alike)."""
    return SEPARATOR.join((IDENTIFIER, resource_type, system, value))


def condition_key(plan: SearchPlan) -> str | None:
    """The identifier key a condition is exactly the holding of: one type, one
    ``identifier=system|value`` and nothing else; None for any other condition."""
    if len(plan.resource_types) != 1 or len(plan.where) != 1 or len(plan.where[0]) != 1:
        return None
    match = plan.where[0][0]
    if not isinstance(match, TokenMatch) or match.param != IDENTIFIER:
        return None
    if not match.system or not match.code:
        return None
    return identifier_key(plan.resource_types[0], match.system, match.code)


def identifier_keys(resource_type: str, entries: Iterable[IndexEntry]) -> set[str]:
    """The identifier keys of a version indexed with ``entries``."""
    return {
        identifier_key(resource_type, entry.system, entry.code)
        for entry in entries
        if type(entry) is TokenEntry and entry.param == IDENTIFIER and entry.system
    }


def with_identifier_claims(record: WriteRecord) -> WriteRecord:
    """``record`` with its condition, when ``condition_key`` has one, checked as a claim
    instead of a search (the identifier keys every version holds: ``ClaimBook``)."""
    condition = condition_key(record.unless_exists) if record.unless_exists else None
    if condition is None:
        return record
    matched = Claim(condition, IF_NONE_EXIST, f"A {record.resource_type} matches the condition")
    return replace(record, unless_exists=None, enforced=(*record.enforced, matched))


@dataclass
class ClaimBook:
    """What a batch knows of the claims it touches."""

    holders: dict[str, set[int]]  # every key the batch enforces -> the rkeys holding it
    held: dict[int, tuple[str, ...]]  # rkey of a resource stored before -> its claims
    changed: dict[int, tuple[str, ...]] = field(default_factory=dict)  # rkey -> new claims

    def claims_of(self, rkey: int) -> tuple[str, ...]:
        return self.changed[rkey] if rkey in self.changed else self.held.get(rkey, ())

    def admit(
        self, job: Sequence[WriteRecord], rkey_of: RkeyOf
    ) -> GuardViolated | ConditionMatched | None:
        """Take the job's claims, unless another resource holds one it enforces (or one
        its condition names: ``with_identifier_claims``)."""
        owners = {
            rkey_of(record): self._after(
                rkey_of(record), record.resource_type, record.entries, record.claims
            )
            if not record.deleted
            else ()  # a deleted resource holds nothing
            for record in job
        }
        for record in job:
            for claim in record.enforced:
                holders = set(self.holders.get(claim.key, ()))
                for rkey, claims in owners.items():
                    holders.discard(rkey)
                    if claim.key in claims:
                        holders.add(rkey)
                if holders - {rkey_of(record)}:
                    if claim.code == IF_NONE_EXIST:
                        return ConditionMatched(record.resource_type, record.resource_id)
                    return GuardViolated(claim, record.resource_type, record.resource_id)
        for rkey, claims in owners.items():
            for key in self.claims_of(rkey):
                if key in self.holders:
                    self.holders[key].discard(rkey)
            for key in claims:
                if key in self.holders:
                    self.holders[key].add(rkey)
            self.changed[rkey] = claims
        return None

    def replace(
        self,
        rkey: int,
        resource_type: str,
        entries: Iterable[IndexEntry],
        claims: tuple[str, ...] | None,
    ) -> None:
        """Give a stored resource the claims of its version indexed anew, unchecked
        (``rofecare reindex``)."""
        self.changed[rkey] = self._after(rkey, resource_type, entries, claims)

    def _after(
        self,
        rkey: int,
        resource_type: str,
        entries: Iterable[IndexEntry],
        claims: tuple[str, ...] | None,
    ) -> tuple[str, ...]:
        """What a resource holds once its version is written: its rules' ``claims`` (those
        it held, when None: its type claims nothing itself) and its identifier keys."""
        rules = (
            claims
            if claims is not None
            else tuple(key for key in self.claims_of(rkey) if not key.startswith(_IDENTIFIERS))
        )
        keys = identifier_keys(resource_type, entries)
        return tuple(sorted({*rules, *keys})) if keys else rules

    def write(self, connection: sqlite3.Connection) -> None:
        """Replace the claims of every resource the batch wrote whose claims changed."""
        changed = {
            rkey: claims
            for rkey, claims in self.changed.items()
            if set(claims) != set(self.held.get(rkey, ()))
        }
        stored = sorted(rkey for rkey in changed if self.held.get(rkey))
        for start in range(0, len(stored), _KEYS_PER_QUERY):
            chunk = stored[start : start + _KEYS_PER_QUERY]
            connection.execute(
                f"DELETE FROM resource_claim WHERE rkey IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
        rows = sorted({(key, rkey) for rkey, claims in changed.items() for key in claims})
        insert_rows(connection, "INSERT INTO resource_claim (claim, rkey)", rows)


def read_claims(
    connection: sqlite3.Connection,
    jobs: Sequence[Sequence[WriteRecord]],
    stored: dict[tuple[str, str], int],
) -> ClaimBook:
    """The book of a batch: the holders of every key it enforces, and the claims of the
    stored resources it rewrites. ``stored``: rkey by (type, id) of the batch's resources
    stored before it."""
    records = [record for job in jobs for record in job]
    keys = sorted({claim.key for record in records for claim in record.enforced})
    owners = [stored.get((record.resource_type, record.resource_id)) for record in records]
    return read_book(connection, keys, sorted({rkey for rkey in owners if rkey is not None}))


def read_book(connection: sqlite3.Connection, keys: list[str], rkeys: list[int]) -> ClaimBook:
    """The holders of ``keys`` and the claims held by the resources ``rkeys``."""
    holders: dict[str, set[int]] = {key: set() for key in keys}
    held: dict[int, tuple[str, ...]] = {rkey: () for rkey in rkeys}
    for column, values in (("claim", keys), ("rkey", rkeys)):
        for start in range(0, len(values), _KEYS_PER_QUERY):
            chunk = values[start : start + _KEYS_PER_QUERY]
            rows = connection.execute(
                "SELECT claim, rkey FROM resource_claim "
                f"WHERE {column} IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for key, rkey in rows:
                if column == "claim":
                    holders[key].add(rkey)
                else:
                    held[rkey] = (*held[rkey], key)
    return ClaimBook(holders, held)
