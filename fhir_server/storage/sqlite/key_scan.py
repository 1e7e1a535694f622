"""Default-order pages of a range search, read from the index table in resource-key order.

Why: a page in the default order is the ``count`` smallest resource keys that match. For a
value that is looked up by equality (a token, a reference) the value index lists its
matches in key order already. A range does not: ``Observation?date=ge2020&date=lt2021``
lists ~6,000 index rows by date at 100,000 resources, and SQLite sorted every one of them
by key before it could return the first 50 (2.6 ms). Each index table is clustered by
(rkey, n), so reading it in key order and keeping the rows that satisfy the range stops
after the page instead (0.13 ms), as long as matches are not rare.

When they are rare the scan would read the whole table for nothing, so it runs in windows
of keys that grow, within a budget of keys, and hands the rest to the sorted index lookup
(``SqlBuilder.page_from_index``) starting where the scan stopped. The caller skips the
scan altogether when the bounded count already showed few matches (sorting them is cheap).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from fhir_server.search.plan import SearchPlan
from fhir_server.storage.sqlite.predicates import SqlBuilder

FIRST_WINDOW = 1_024  # resource keys read by the first window; each next one doubles
SCAN_BUDGET = 16_384  # keys read at most before the sorted index lookup takes over
FEW_MATCHES = 1_000  # a result set this small is sorted rather than scanned for


@dataclass(frozen=True)
class KeyScan:
    """One default-order page of ``plan``: ``count + 1`` keys (one more tells that a next
    page exists) after ``edge``, or before it when ``descending`` (a previous page)."""

    connection: sqlite3.Connection
    plan: SearchPlan
    builder: Callable[[], SqlBuilder]
    descending: bool
    edge: int | None

    def page(self) -> list[int] | None:
        """The page's keys, or None when the plan has no range driver to scan."""
        scanner = self.builder()
        sql = scanner.key_scan_page(self.plan.where, self.plan.resource_types, self.descending)
        if sql is None:
            return None
        wanted = self.plan.count + 1
        found: list[int] = []
        top = self._top_key()
        if self.descending:  # keys below ``position`` are left to read
            position = top + 1 if self.edge is None else self.edge
        else:  # keys above it
            position = 0 if self.edge is None else self.edge
        window, scanned = FIRST_WINDOW, 0
        while len(found) < wanted and scanned < SCAN_BUDGET:
            if self.descending:
                if position <= 1:
                    return found
                low, high = max(position - 1 - window, 0), position - 1
                following = low + 1
            else:
                if position >= top:
                    return found
                low, high = position, position + window
                following = high
            args = [*scanner.args, low, high, wanted - len(found)]
            found += [row[0] for row in self.connection.execute(sql, args)]
            position = following
            scanned += window
            window *= 2
        if len(found) >= wanted:
            return found
        return found + self._sorted_rest(position, wanted - len(found))

    def _top_key(self) -> int:
        row = self.connection.execute("SELECT MAX(rkey) FROM resource_current").fetchone()
        return int(row[0] or 0)

    def _sorted_rest(self, edge: int, wanted: int) -> list[int]:
        """The rest of the page after the scanned keys, from the range's own index."""
        builder = self.builder()
        sql = builder.page_from_index(
            self.plan.where, self.plan.resource_types, self.descending, edge
        )
        assert sql is not None  # a plan with a scannable driver has an index driver
        return [row[0] for row in self.connection.execute(sql, [*builder.args, wanted])]
