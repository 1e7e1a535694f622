"""References inside a Bundle: placeholders (``urn:uuid:``, ``urn:oid:``) and conditional
references (``Patient?identifier=...``) (https://hl7.org/fhir/R4/http.html#trules).

A transaction's entries name each other by ``fullUrl`` before any of them has an id; the
server assigns the ids and must rewrite every reference to them, at any depth (extensions,
contained resources, backbone elements), before the resources are stored. A placeholder
that names no entry must not be stored as it is: it would be a reference nobody can follow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhir_server.errors import BadRequest

PLACEHOLDER_PREFIXES = ("urn:uuid:", "urn:oid:")
# A conditional reference: a resource type, then a query (``Patient?identifier=a|b``).
_CONDITIONAL = re.compile(r"(?P<type>[A-Z][A-Za-z]{1,63})\?(?P<query>.+)", re.DOTALL)


def is_placeholder(value: str) -> bool:
    return value.startswith(PLACEHOLDER_PREFIXES)


def conditional_reference(value: str) -> tuple[str, str] | None:
    """(type, query) of a conditional reference; None for any other reference."""
    match = _CONDITIONAL.fullmatch(value)
    return (match["type"], match["query"]) if match else None


def collect_conditional_references(node: Any, into: set[str]) -> None:
    """Every conditional reference (``Reference.reference`` values) under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if conditional_reference(value) is not None:
                    into.add(value)
            else:
                collect_conditional_references(value, into)
    elif isinstance(node, list):
        for item in node:
            collect_conditional_references(item, into)


def rewrite_references(
    node: Any,
    targets: dict[str, str],
    resolve_conditional: Callable[[str], str],
    path: str,
) -> Any:
    """A copy of ``node`` with every reference to a bundle entry rewritten to ``Type/id``.

    ``targets`` maps fullUrls to ``Type/id``. ``Reference.reference`` values are looked up
    there (placeholders that name no entry are a 400) and conditional ones resolved; any other
    string equal to a placeholder fullUrl (a ``uri`` element naming the entry) is rewritten
    too. ``path`` is the FHIRPath of ``node``, for the error.

    The FHIRPath of the faulty element is put together only when there is a fault, as the
    error passes back up: built at every node, it was a quarter of the cost (38 -> 29 µs
    per entry of a Synthea transaction; rewriting was 8 % of the loader's time)."""
    try:
        return _rewrite(node, targets, resolve_conditional)
    except _NoEntry as missing:
        raise BadRequest(
            f"The reference {missing.value[:80]!r} names no entry of the Bundle",
            expression=path + "".join(reversed(missing.steps)),
            rofecare_code="rofecare-2405",
        ) from None


class _NoEntry(Exception):
    """A placeholder reference that names no entry; ``steps`` collects its path, leaf first."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value
        self.steps: list[str] = []


def _rewrite(node: Any, targets: dict[str, str], resolve_conditional: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            try:
                if key == "reference" and isinstance(value, str):
                    out[key] = _reference(value, targets, resolve_conditional)
                else:
                    out[key] = _rewrite(value, targets, resolve_conditional)
            except _NoEntry as missing:
                missing.steps.append(f".{key}")
                raise
        return out
    if isinstance(node, list):
        rewritten = []
        for index, item in enumerate(node):
            try:
                rewritten.append(_rewrite(item, targets, resolve_conditional))
            except _NoEntry as missing:
                missing.steps.append(f"[{index}]")
                raise
        return rewritten
    if isinstance(node, str) and is_placeholder(node) and node in targets:
        return targets[node]
    return node


def _reference(
    value: str, targets: dict[str, str], resolve_conditional: Callable[[str], str]
) -> str:
    if value in targets:
        return targets[value]
    if is_placeholder(value):
        raise _NoEntry(value)
    if conditional_reference(value) is not None:
        return resolve_conditional(value)
    return value


def substitute_placeholders(query: str, targets: dict[str, str]) -> str:
    """A search condition with the placeholders it mentions replaced by ``Type/id``
    (``ifNoneExist: patient=urn:uuid:...``)."""
    for full_url, target in targets.items():
        if is_placeholder(full_url) and full_url in query:
            query = query.replace(full_url, target)
    return query


def mentioned_placeholders(query: str) -> list[str]:
    """Placeholders a condition mentions (they must be resolved before it can run)."""
    return re.findall(r"urn:(?:uuid|oid):[A-Za-z0-9.\-]+", query)
