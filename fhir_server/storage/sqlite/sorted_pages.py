"""Pages of a search sorted by one parameter, read in index order.

The general path computes every match's sort value and then keeps the top of the page:
~44 ms for ``Observation?_sort=-date`` over 50,000 Observations. Here the parameter's
(pid, value) index is walked in sort order and the walk stops after one page, so a page
costs about what its rows cost. A resource's sort value is its lowest value ascending and
its highest descending (search.html#sort): a row counts only if it holds that value.

The order is two phases: resources with a value, by (value, rkey) in the sort direction;
then resources without one, by rkey ascending (missing values sort last). A cursor is the
(value, rkey) of a page edge, with ``MISSING`` as the value in the second phase.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from fhir_server.search.plan import SearchPlan, SortKey
from fhir_server.storage.sqlite.predicates import SqlBuilder

MISSING = "\U0010ffff-missing"
# kind -> (table, column ascending, column descending, extra condition)
_ORDERED = {
    "date": ("idx_date", "low", "high", ""),
    "string": ("idx_string", "norm", "norm", ""),
    "token": ("idx_token", "code", "code", " AND {a}code != ''"),
    "number": ("idx_number", "value", "value", ""),
    "quantity": ("idx_quantity", "value", "value", ""),
    "uri": ("idx_uri", "uri", "uri", ""),
    "reference": ("idx_reference", "target_id", "target_id", " AND {a}target_id IS NOT NULL"),
}
Row = tuple[int, Any]  # (rkey, sort value)


class SortedPages:
    """Rows after or before a cursor in the two-phase order, for one single-key plan."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        plan: SearchPlan,
        pid: int,
        builder: Callable[[], SqlBuilder],
        conditions: Callable[[SearchPlan, SqlBuilder], str],
    ) -> None:
        self._connection = connection
        self._plan = plan
        self._key: SortKey = plan.sort[0]
        self._pid = int(pid)
        self._builder = builder
        self._conditions = conditions
        table, ascending, descending, extra = _ORDERED[self._key.kind]
        self._table = table
        self._column = descending if self._key.descending else ascending
        self._extra = extra

    def after(self, edge: list[Any] | None, limit: int) -> list[Row]:
        """Up to ``limit`` rows after ``edge`` (None: from the start), in order."""
        if edge is not None and edge[0] == MISSING:
            return self._missing(edge[1], limit, backwards=False)
        rows = self._valued(edge, limit, backwards=False)
        if len(rows) < limit:
            rows += self._missing(None, limit - len(rows), backwards=False)
        return rows

    def before(self, edge: list[Any], limit: int) -> list[Row]:
        """Up to ``limit`` rows before ``edge``, nearest first (the caller reverses)."""
        if edge[0] != MISSING:
            return self._valued(edge, limit, backwards=True)
        rows = self._missing(edge[1], limit, backwards=True)
        if len(rows) < limit:
            rows += self._valued(None, limit - len(rows), backwards=True)
        return rows

    def _valued(self, edge: list[Any] | None, limit: int, *, backwards: bool) -> list[Row]:
        descending = self._key.descending != backwards
        direction = "DESC" if descending else "ASC"
        aggregate = "MAX" if self._key.descending else "MIN"
        column, table, pid = self._column, self._table, self._pid
        builder = self._builder()
        sql = (
            f"SELECT d.rkey, d.{column} FROM {table} d WHERE d.pid = {pid}"
            + self._extra.format(a="d.")
            + f" AND d.{column} = (SELECT {aggregate}(x.{column}) FROM {table} x "
            f"WHERE x.rkey = d.rkey AND +x.pid = {pid}" + self._extra.format(a="x.") + ")"
        )
        where = builder.where(self._plan.where, self._plan.resource_types, "d.rkey")
        if where:
            sql += f" AND {where}"
        if edge is not None:
            operator = "<" if descending else ">"
            sql += f" AND (d.{column} {operator} ? OR (d.{column} = ? AND d.rkey {operator} ?))"
            builder.args.extend((edge[0], edge[0], edge[1]))
        sql += f" ORDER BY d.{column} {direction}, d.rkey {direction} LIMIT ?"
        builder.args.append(limit + 8)  # a resource holding its extreme value twice repeats
        rows: list[Row] = []
        seen: set[int] = set()
        for rkey, value in self._connection.execute(sql, builder.args):
            if rkey not in seen:
                seen.add(rkey)
                rows.append((rkey, value))
        return rows[:limit]

    def _missing(self, after_rkey: int | None, limit: int, *, backwards: bool) -> list[Row]:
        builder = self._builder()
        sql = (
            "SELECT c.rkey FROM resource_current c WHERE "
            + self._conditions(self._plan, builder)
            + f" AND c.rkey NOT IN (SELECT rkey FROM {self._table} WHERE pid = {self._pid}"
            + self._extra.format(a="")
            + ")"
        )
        if after_rkey is not None:
            sql += f" AND c.rkey {'<' if backwards else '>'} ?"
            builder.args.append(after_rkey)
        sql += f" ORDER BY c.rkey {'DESC' if backwards else 'ASC'} LIMIT ?"
        builder.args.append(limit)
        return [(row[0], MISSING) for row in self._connection.execute(sql, builder.args)]


def orderable(plan: SearchPlan, pids: list[int]) -> bool:
    """Whether ``plan`` can be paged in index order: one sort key of an indexed kind on
    one resource type (one pid, so one index range holds the whole order)."""
    return (
        len(plan.sort) == 1
        and plan.sort[0].kind in _ORDERED
        and plan.sort[0].param not in ("_id", "_lastUpdated")
        and len(plan.resource_types) == 1
        and len(pids) == 1
    )
