"""Token search values (https://hl7.org/fhir/R4/search.html#token)."""

from __future__ import annotations


def split_escaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` except where escaped by a backslash (search.html#escaping).

    Escapes stay in the parts, so a value can be split again on another separator (``,``
    then ``|`` then ``$``); ``unescape`` turns the final pieces into plain text.
    """
    if "\\" not in text:  # nothing escaped, as in nearly every value: str.split, ~20x faster
        return text.split(separator)
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char + next(chars, ""))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """``\\|``, ``\\,``, ``\\$`` and ``\\\\`` -> the character itself; other backslashes stay."""
    if "\\" not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")  # "" for a trailing backslash, which stays as it is
            out.append(escaped if escaped and escaped in "\\|,$" else char + escaped)
        else:
            out.append(char)
    return "".join(out)
