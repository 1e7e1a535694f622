"""Running a search plan on SQLite: matching, sorting, keyset paging, totals, includes.

Paging is keyset, never OFFSET: a cursor holds the sort values and ``rkey`` of the row at a
page edge, and the next page is "rows after those values" in the same order. Rows inserted
or deleted elsewhere in the result therefore never shift a page, and page 1,000 costs what
page 1 costs. Sort values of multi-valued parameters follow R4 (search.html#sort): the
lowest value ascending, the highest descending; resources without one sort last.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from fhir_server.search.plan import Include, SearchPlan, SortKey
from fhir_server.storage.base import SearchPage, StoredVersion
from fhir_server.storage.cursors import decode_cursor, page_of
from fhir_server.storage.sqlite import key_scan
from fhir_server.storage.sqlite.predicates import PidResolver, SqlBuilder
from fhir_server.storage.sqlite.rows import VERSION_COLUMNS, version_of
from fhir_server.storage.sqlite.sorted_pages import SortedPages, orderable

MAX_INCLUDED = 5_000
MAX_INCLUDE_ROUNDS = 4  # :iterate follows references at most this many steps
_SORT_SOURCES = {
    # kind: (table, column ascending, column descending, text?)
    "string": ("idx_string", "norm", "norm", True),
    "token": ("idx_token", "code", "code", True),
    "date": ("idx_date", "low", "high", False),
    "number": ("idx_number", "value", "value", False),
    "quantity": ("idx_quantity", "value", "value", False),
    "reference": ("idx_reference", "target_id", "target_id", True),
    "uri": ("idx_uri", "uri", "uri", True),
}
_LAST_TEXT = "char(1114111)"
_LAST_NUMBER = "9e307"


@dataclass(frozen=True)
class _Row:
    rkey: int
    keys: tuple[Any, ...]


class SqliteSearch:
    """One search against one connection (runs on a reader thread)."""

    def __init__(self, connection: sqlite3.Connection, pids: PidResolver) -> None:
        self._connection = connection
        self._pids = pids
        self._estimates: dict[tuple[str, tuple[Any, ...]], int] = {}

    def _estimate(self, sql: str, args: list[Any]) -> int:
        key = (sql, tuple(args))
        if key not in self._estimates:
            self._estimates[key] = int(self._connection.execute(sql, args).fetchone()[0])
        return self._estimates[key]

    def _single_valued(self, pids: list[int]) -> bool:
        if not pids:
            return False
        listed = ",".join(str(int(pid)) for pid in pids)
        row = self._connection.execute(
            f"SELECT COUNT(*) FROM param_multiple WHERE pid IN ({listed})"
        ).fetchone()
        return int(row[0]) == 0

    def _builder(self) -> SqlBuilder:
        return SqlBuilder(self._pids, self._estimate, self._single_valued)

    def run(self, plan: SearchPlan) -> SearchPage:
        direction, after = decode_cursor(plan.cursor, len(plan.sort) + 1)
        total = None
        if plan.total == "bounded":
            total = self._count(plan, limit=plan.total_limit)
        elif plan.total != "none":
            total = self._count(plan)
        if plan.count == 0:
            return SearchPage([], [], total, None, None)
        rows = self._ordered_page(plan, direction, after)
        if rows is None:
            rows = self._index_page(plan, direction, after, total)
        if rows is None:
            rows = self._page(plan, direction, after)
        rows, next_cursor, previous_cursor = page_of(
            rows, plan.count, direction, after, lambda row: [*row.keys, row.rkey]
        )
        matches = self._versions([row.rkey for row in rows])
        included = self._includes(plan.includes, matches) if plan.includes else []
        return SearchPage(
            [version for _, version in matches],
            included,
            total,
            next_cursor,
            previous_cursor,
        )

    # -- matching ----------------------------------------------------------------------------

    def _conditions(self, plan: SearchPlan, builder: SqlBuilder) -> str:
        conditions = ["c.deleted = 0"]
        if plan.resource_types:
            conditions.append(f"c.resource_type IN ({','.join('?' * len(plan.resource_types))})")
            builder.args.extend(plan.resource_types)
        where = builder.where(plan.where, plan.resource_types, "c.rkey")
        if where:
            conditions.append(where)
        return " AND ".join(conditions)

    def _count(self, plan: SearchPlan, limit: int | None = None) -> int | None:
        """The number of matches; with ``limit``, None when there are more than that (the
        count then stops after ``limit + 1`` resources)."""
        bounded = limit is not None
        builder = self._builder()
        sql = builder.count_from_index(plan.where, plan.resource_types, bounded=bounded)
        if sql is None:
            builder = self._builder()
            conditions = self._conditions(plan, builder)
            sql = f"SELECT COUNT(*) FROM resource_current c WHERE {conditions}"
            if bounded:
                sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM resource_current c WHERE {conditions}"
                sql += " LIMIT ?)"
        args = list(builder.args)
        if limit is not None:
            args.append(limit + 1)
        found = int(self._connection.execute(sql, args).fetchone()[0])
        return None if limit is not None and found > limit else found

    def _ordered_page(
        self, plan: SearchPlan, direction: str, edge: list[Any] | None
    ) -> list[_Row] | None:
        """One page read in the sort parameter's index order, when the plan allows it."""
        if len(plan.sort) != 1:
            return None
        pids = self._pids(plan.resource_types, plan.sort[0].param)
        if not orderable(plan, pids):
            return None
        pages = SortedPages(self._connection, plan, pids[0], self._builder, self._conditions)
        if direction == "previous":
            assert edge is not None
            found = pages.before(edge, plan.count + 1)
        else:
            found = pages.after(edge, plan.count + 1)
        return [_Row(rkey, (value,)) for rkey, value in found]

    def _index_page(
        self, plan: SearchPlan, direction: str, after: list[Any] | None, total: int | None
    ) -> list[_Row] | None:
        """A page in the default order (by resource key) read from the driving index; a
        range driver with many matches (``total`` unknown or large) is read in key order."""
        if plan.sort:
            return None
        edge = None if after is None else int(after[-1])
        descending = direction == "previous"
        if total is None or total > key_scan.FEW_MATCHES:
            keys = key_scan.KeyScan(self._connection, plan, self._builder, descending, edge).page()
            if keys is not None:
                return [_Row(key, ()) for key in keys]
        builder = self._builder()
        sql = builder.page_from_index(plan.where, plan.resource_types, descending, edge)
        if sql is None:
            return None
        builder.args.append(plan.count + 1)
        return [_Row(row[0], ()) for row in self._connection.execute(sql, builder.args)]

    def _page(self, plan: SearchPlan, direction: str, after: list[Any] | None) -> list[_Row]:
        builder = self._builder()
        keys = [self._sort_expression(key, plan.resource_types) for key in plan.sort]
        descending = [key.descending for key in plan.sort] + [False]
        if direction == "previous":
            descending = [not flag for flag in descending]
        columns = "".join(f", {expression} AS k{index}" for index, expression in enumerate(keys))
        names = [f"k{index}" for index in range(len(keys))] + ["rkey"]
        sql = (
            f"SELECT * FROM (SELECT c.rkey AS rkey{columns} FROM resource_current c "
            f"WHERE {self._conditions(plan, builder)})"
        )
        if after is not None:
            sql += " WHERE " + _keyset(names, descending, after, builder.args)
        order = ", ".join(
            f"{name} {'DESC' if flag else 'ASC'}"
            for name, flag in zip(names, descending, strict=True)
        )
        sql += f" ORDER BY {order} LIMIT ?"
        builder.args.append(plan.count + 1)
        return [
            _Row(row[0], tuple(row[1:]))
            for row in self._connection.execute(sql, builder.args).fetchall()
        ]

    def _sort_expression(self, key: SortKey, scope: tuple[str, ...]) -> str:
        if key.param == "_id":
            return "c.id"
        if key.param == "_lastUpdated":
            return "c.last_updated_us"
        table, ascending, descending, text = _SORT_SOURCES[key.kind]
        column = descending if key.descending else ascending
        aggregate = "MAX" if key.descending else "MIN"
        pids = ",".join(str(int(pid)) for pid in self._pids(scope, key.param)) or "-1"
        last = ("''" if key.descending else _LAST_TEXT) if text else _LAST_NUMBER
        if not text and key.descending:
            last = "-" + _LAST_NUMBER
        extra = " AND s.code != ''" if key.kind == "token" else ""
        return (
            f"COALESCE((SELECT {aggregate}(s.{column}) FROM {table} s WHERE s.rkey = c.rkey "
            f"AND s.pid IN ({pids}) AND s.grp = 0{extra}), {last})"
        )

    def _versions(self, rkeys: list[int]) -> list[tuple[int, StoredVersion]]:
        if not rkeys:
            return []
        sql = (
            f"SELECT c.rkey, {VERSION_COLUMNS} FROM resource_current c "
            "JOIN resource_version v ON v.seq = c.seq "
            f"WHERE c.rkey IN ({','.join('?' * len(rkeys))})"
        )
        found = {row[0]: version_of(row[1:]) for row in self._connection.execute(sql, rkeys)}
        return [(rkey, found[rkey]) for rkey in rkeys if rkey in found]

    # -- _include and _revinclude ---------------------------------------------------------

    def _includes(
        self, includes: tuple[Include, ...], matches: list[tuple[int, StoredVersion]]
    ) -> list[StoredVersion]:
        seen = {rkey for rkey, _ in matches}
        included: list[StoredVersion] = []
        frontier = matches
        for round_number in range(MAX_INCLUDE_ROUNDS):
            active = [item for item in includes if round_number == 0 or item.iterate]
            if not active or not frontier:
                break
            found: list[int] = []
            for include in active:
                rkeys = self._reverse(include, frontier) if include.reverse else []
                if not include.reverse:
                    rkeys = self._forward(include, frontier)
                for rkey in rkeys:
                    if rkey not in seen and len(seen) < MAX_INCLUDED:
                        seen.add(rkey)
                        found.append(rkey)
            frontier = self._versions(found)
            included.extend(version for _, version in frontier)
        return included

    def _reference_pids(self, source_type: str, param: str) -> str:
        if param == "*":
            sql = "SELECT pid FROM search_param WHERE kind = 'reference'"
            args: tuple[str, ...] = ()
            if source_type != "*":
                sql += " AND resource_type = ?"
                args = (source_type,)
            pids = [row[0] for row in self._connection.execute(sql, args)]
        else:
            pids = self._pids((source_type,), param)
        return ",".join(str(int(pid)) for pid in pids) or "-1"

    def _forward(self, include: Include, frontier: list[tuple[int, StoredVersion]]) -> list[int]:
        sources = [
            rkey
            for rkey, version in frontier
            if include.source_type in ("*", version.resource_type)
        ]
        if not sources:
            return []
        source_type = "*" if include.source_type == "*" else include.source_type
        pids = self._reference_pids(source_type, include.param)
        sql = (
            "SELECT c.rkey FROM idx_reference r JOIN resource_current c "
            "ON c.resource_type = r.target_type AND c.id = r.target_id "
            f"WHERE r.pid IN ({pids}) AND r.rkey IN ({','.join('?' * len(sources))}) "
            "AND c.deleted = 0"
        )
        args: list[Any] = list(sources)
        if include.target_type:
            sql += " AND r.target_type = ?"
            args.append(include.target_type)
        return [row[0] for row in self._connection.execute(sql, args)]

    def _reverse(self, include: Include, frontier: list[tuple[int, StoredVersion]]) -> list[int]:
        by_type: dict[str, list[str]] = {}
        for _, version in frontier:
            by_type.setdefault(version.resource_type, []).append(version.resource_id)
        pids = self._reference_pids(include.source_type, include.param)
        found: list[int] = []
        for target_type, ids in by_type.items():
            if include.target_type and include.target_type != target_type:
                continue
            sql = (
                "SELECT DISTINCT r.rkey FROM idx_reference r "
                "JOIN resource_current c ON c.rkey = r.rkey "
                f"WHERE r.pid IN ({pids}) AND r.target_type = ? "
                f"AND r.target_id IN ({','.join('?' * len(ids))}) AND c.deleted = 0"
            )
            found.extend(row[0] for row in self._connection.execute(sql, [target_type, *ids]))
        return found


def _keyset(names: list[str], descending: list[bool], after: list[Any], args: list[Any]) -> str:
    """Rows strictly after ``after`` in the order (name, direction)...: a lexicographic OR."""
    alternatives: list[str] = []
    for index, name in enumerate(names):
        equal = [f"{names[i]} = ?" for i in range(index)]
        args.extend(after[:index])
        operator = "<" if descending[index] else ">"
        args.append(after[index])
        alternatives.append("(" + " AND ".join([*equal, f"{name} {operator} ?"]) + ")")
    return "(" + " OR ".join(alternatives) + ")"
