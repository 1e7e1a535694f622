"""Token search values (https://hl7.org/fhir/R4/search.html#token)."""

from __future__ import annotations

from typing import Any

from fhir_server.search.values import TokenEntry


def split_escaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` except where escaped by a backslash (search.html#escaping)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            current.append(escaped if escaped in "\\|,$" else char + escaped)
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def identifier_tokens(resource: dict[str, Any]) -> tuple[TokenEntry, ...]:
    """Index entries of the ``identifier`` search parameter: one per Identifier with a value.

    Every R4 resource with an ``identifier`` element declares an ``identifier`` token
    parameter over it, so this holds for all types until the general indexer lands.
    """
    value = resource.get("identifier")
    identifiers = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return tuple(
        TokenEntry("identifier", item.get("system"), item["value"])
        for item in identifiers
        if isinstance(item, dict) and isinstance(item.get("value"), str)
    )
