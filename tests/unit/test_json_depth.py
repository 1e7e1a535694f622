"""``nests_deeper_than`` answers as ``json_depth`` does, on every shape and at every limit."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.model.resource import json_depth, nests_deeper_than


def _nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


SHAPES: list[Any] = [
    {},
    [],
    {"a": 1},
    {"a": {}},
    {"a": []},
    {"a": [1]},
    [[[]]],
    {"a": [{"b": "c"}], "d": {"e": {"f": [1, 2, {"g": None}]}}},
    {"extension": [{"extension": [{"extension": [{"url": "x", "valueString": "y"}]}]}]},
    _nested(70),
]


@pytest.mark.parametrize("value", SHAPES)
def test_agrees_with_json_depth_at_every_limit(value: Any) -> None:
    depth = json_depth(value, 1_000)
    for limit in range(0, depth + 3):
        assert nests_deeper_than(value, limit) == (depth > limit), (depth, limit)


def test_nesting_beyond_the_recursion_limit_is_still_measured() -> None:
    deep = _nested(5_000)
    assert nests_deeper_than(deep, 4_999)
    assert not nests_deeper_than(deep, 5_000)
