"""Claims in a group commit (storage/base.py, ``Claim``): read once, checked job by job in
Python, written with the batch's other rows.

Why like versions (batch.py) and not a statement per job: each statement of the writer
thread waits for the GIL the event loop holds. A batch of Patient registrations, each
claiming its medical record number, reads the claims it checks in one query and writes
them in one insert; a job is judged against the table as read and every job accepted
before it in the batch, so of two jobs claiming one key, the first wins.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fhir_server.storage.base import GuardViolated, WriteRecord
from fhir_server.storage.sqlite.rows import insert_rows

_KEYS_PER_QUERY = 400

RkeyOf = Callable[[WriteRecord], int]


@dataclass
class ClaimBook:
    """What a batch knows of the claims it touches."""

    holders: dict[str, set[int]]  # every key the batch enforces -> the rkeys holding it
    held: dict[int, tuple[str, ...]]  # rkey of a resource stored before -> its claims
    changed: dict[int, tuple[str, ...]] = field(default_factory=dict)  # rkey -> new claims

    def claims_of(self, rkey: int) -> tuple[str, ...]:
        return self.changed[rkey] if rkey in self.changed else self.held.get(rkey, ())

    def admit(self, job: Sequence[WriteRecord], rkey_of: RkeyOf) -> GuardViolated | None:
        """Take the job's claims, unless another resource holds one it enforces."""
        owners: dict[int, tuple[str, ...]] = {}
        for record in job:
            if record.deleted:
                owners[rkey_of(record)] = ()  # a deleted resource holds nothing
            elif record.claims is not None:
                owners[rkey_of(record)] = record.claims
        for record in job:
            for claim in record.enforced:
                holders = set(self.holders.get(claim.key, ()))
                for rkey, claims in owners.items():
                    holders.discard(rkey)
                    if claim.key in claims:
                        holders.add(rkey)
                if holders - {rkey_of(record)}:
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

    def replace(self, rkey: int, claims: tuple[str, ...]) -> None:
        """Give a stored resource ``claims`` in place of whatever it holds, unchecked
        (``rofecare reindex``)."""
        self.held.setdefault(rkey, ())
        self.changed[rkey] = claims

    def write(self, connection: sqlite3.Connection) -> None:
        """Replace the claims of every resource the batch wrote."""
        if not self.changed:
            return
        stored = sorted(rkey for rkey in self.changed if rkey in self.held)
        for start in range(0, len(stored), _KEYS_PER_QUERY):
            chunk = stored[start : start + _KEYS_PER_QUERY]
            connection.execute(
                f"DELETE FROM resource_claim WHERE rkey IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
        rows = sorted({(key, rkey) for rkey, claims in self.changed.items() for key in claims})
        insert_rows(connection, "INSERT INTO resource_claim (claim, rkey)", rows)


def read_claims(
    connection: sqlite3.Connection,
    jobs: Sequence[Sequence[WriteRecord]],
    stored: dict[tuple[str, str], int],
) -> ClaimBook | None:
    """The book of a batch (None when no record of it claims anything): the holders of
    every key it enforces, and the claims of the stored resources it rewrites.
    ``stored``: rkey by (type, id) of the batch's resources stored before it."""
    records = [
        record for job in jobs for record in job if record.claims is not None or record.deleted
    ]
    if not records:
        return None
    keys = sorted({claim.key for record in records for claim in record.enforced})
    owners = [stored.get((record.resource_type, record.resource_id)) for record in records]
    rkeys = sorted({rkey for rkey in owners if rkey is not None})
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
