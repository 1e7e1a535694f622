"""``_summary`` and ``_elements`` (https://hl7.org/fhir/R4/search.html#summary, #elements).

Both return a subset of the resource, tagged SUBSETTED so no client mistakes it for the whole
and writes it back. Summary elements are those the base definitions mark ``isSummary``;
mandatory elements are always kept, as the specification asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.model.resource import SUBSETTED_TAG


@dataclass(frozen=True)
class ElementSets:
    """Element paths of one resource type that ``_summary`` and ``_elements`` need."""

    summary: frozenset[str]
    mandatory: frozenset[str]


ALWAYS = frozenset({"resourceType", "id", "meta"})
SUMMARY_MODES = ("true", "false", "text", "data", "count")


def _matches(name: str, paths: frozenset[str], prefix: str) -> bool:
    """Is element ``name`` (a JSON key, maybe ``valueQuantity`` or ``_birthDate``) listed?"""
    key = name[1:] if name.startswith("_") else name
    path = prefix + key
    if path in paths:
        return True
    # A choice element: 'valueQuantity' is listed as 'value[x]' (or asked for as 'value').
    for index in range(1, len(key)):
        if key[index].isupper():
            stem = prefix + key[:index]
            if stem + "[x]" in paths or stem in paths:
                return True
    return False


def _summary_of(node: dict[str, Any], sets: ElementSets, prefix: str) -> dict[str, Any]:
    keep = sets.summary | sets.mandatory
    out: dict[str, Any] = {}
    for name, value in node.items():
        if (not prefix and name in ALWAYS) or not _matches(name, keep, prefix):
            continue
        child_prefix = prefix + (name[1:] if name.startswith("_") else name) + "."
        has_children = any(path.startswith(child_prefix) for path in keep)
        if has_children and isinstance(value, dict):
            out[name] = _summary_of(value, sets, child_prefix)
        elif has_children and isinstance(value, list):
            out[name] = [
                _summary_of(item, sets, child_prefix) if isinstance(item, dict) else item
                for item in value
            ]
        else:
            out[name] = value
    return out


def summarize(resource: dict[str, Any], mode: str, sets: ElementSets | None) -> dict[str, Any]:
    """The resource as ``_summary=mode`` asks for it (mode 'false' returns it whole)."""
    if mode == "false":
        return resource
    base = {name: resource[name] for name in ALWAYS if name in resource}
    if mode == "data":
        subset = {name: value for name, value in resource.items() if name != "text"}
    elif mode == "text":
        subset = dict(base)
        if "text" in resource:
            subset["text"] = resource["text"]
        if sets:
            subset.update(
                (name, value)
                for name, value in resource.items()
                if name not in subset and _matches(name, sets.mandatory, "")
            )
    else:  # "true"
        subset = dict(base)
        if sets:
            subset.update(_summary_of(resource, sets, ""))
    return _tag_subsetted(subset)


def select_elements(
    resource: dict[str, Any], elements: list[str], sets: ElementSets | None
) -> dict[str, Any]:
    """Keep the named top-level elements, plus id, meta and mandatory elements."""
    wanted = frozenset(name.strip() for name in elements if name.strip())
    mandatory = frozenset(path for path in (sets.mandatory if sets else ()) if "." not in path)
    keep = wanted | mandatory
    subset = {
        name: value
        for name, value in resource.items()
        if name in ALWAYS or _matches(name, keep, "")
    }
    return _tag_subsetted(subset)


def _tag_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [tag for tag in meta.get("tag", []) if tag.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED_TAG]
    out = {"resourceType": resource["resourceType"]}
    if "id" in resource:
        out["id"] = resource["id"]
    out["meta"] = meta
    out.update((k, v) for k, v in resource.items() if k not in out)
    return out
