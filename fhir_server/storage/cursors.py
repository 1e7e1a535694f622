"""Paging cursors shared by the stores: opaque to clients, checked when they come back.

A cursor holds the direction and the sort values of the row at a page edge, the store's
order key (SQLite's rkey, MongoDB's creation sequence) last; the next page is "rows after
those values". Anything a store did not issue is a 400, so a tampered cursor never reaches
a query as anything but compared values.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from fhir_server.errors import BadRequest

Row = TypeVar("Row")


def encode_cursor(direction: str, values: list[Any]) -> str:
    """A page edge: the direction and the edge row's sort values, its order key last."""
    data = orjson.dumps({"d": direction[0], "v": values})
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> tuple[str, list[Any] | None]:
    """("next" or "previous", the edge row's values); 400 for anything this store did not
    issue, so a tampered cursor can never reach SQL as anything but bound values."""
    if cursor is None:
        return "next", None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        direction = {"n": "next", "p": "previous"}[data["d"]]
        values = data["v"]
        valid = (
            isinstance(values, list)
            and len(values) == size
            and all(type(value) in (int, float, str) for value in values)
            and isinstance(values[-1], int)
        )
    except (ValueError, KeyError, TypeError, UnicodeEncodeError, binascii.Error):
        valid = False
    if not valid or len(cursor) > 4096:
        raise BadRequest("Invalid paging cursor", rofecare_code="rofecare-1604")
    return direction, values


def page_of(
    rows: list[Row],
    count: int,
    direction: str,
    after: list[Any] | None,
    edge: Callable[[Row], list[Any]],
) -> tuple[list[Row], str | None, str | None]:
    """The page from ``count + 1`` rows read in ``direction`` (the extra row tells that more
    follow), in result order, with its next and previous cursors; ``edge`` gives a row's
    cursor values."""
    more = len(rows) > count
    rows = rows[:count]
    if direction == "previous":
        rows.reverse()
    next_cursor = previous_cursor = None
    if rows:
        if more or direction == "previous":
            next_cursor = encode_cursor("next", edge(rows[-1]))
        if (more and direction == "previous") or (direction == "next" and after):
            previous_cursor = encode_cursor("previous", edge(rows[0]))
    return rows, next_cursor, previous_cursor
