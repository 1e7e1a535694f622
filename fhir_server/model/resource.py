"""Helpers on resources held as JSON dicts, the core's representation."""

from __future__ import annotations

from typing import Any

SUBSETTED_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}


def json_size(value: Any, limit: int) -> int:
    """Number of JSON nodes in ``value``, counting no further than ``limit + 1``."""
    count = 0
    stack: list[Any] = [value]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting no further than ``limit + 1``.

    Iterative on purpose: a 10,000-deep body must not reach Python's recursion limit.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


def nests_deeper_than(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether ``json_depth(value)`` exceeds ``limit``, in a third of its time: recursion
    visits only the containers, and stops at the first branch too deep. The rare limit
    beyond Python's recursion depth is left to ``json_depth``."""
    try:
        return _deeper(value, limit)
    except RecursionError:
        return json_depth(value, limit) > limit


def _deeper(node: dict[str, Any] | list[Any], limit: int) -> bool:
    if limit <= 1:
        return limit < 1 or bool(node)  # a child would be one level deeper
    for child in node.values() if isinstance(node, dict) else node:
        if isinstance(child, dict | list) and _deeper(child, limit - 1):
            return True
    return False


def with_meta(resource: dict[str, Any], version_id: int, last_updated: str) -> dict[str, Any]:
    """A copy of ``resource`` whose server-owned meta fields are set (http.html#versioning)."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = last_updated
    meta.pop("_versionId", None)
    meta.pop("_lastUpdated", None)
    out = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in out)
    return out
