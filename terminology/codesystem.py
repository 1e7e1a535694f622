"""A code system held in memory: its concepts by code and their is-a hierarchy.

Every question the server asks of a code system (is this a code, what is its display, is A
subsumed by B) is a dictionary lookup here, because required bindings are checked on every
write (``fhir_server/definitions/terminology.py``). The hierarchy is what
https://hl7.org/fhir/R4/codesystem.html#hierarchy describes: nested ``concept`` elements and
the ``parent`` / ``child`` properties (https://hl7.org/fhir/R4/codesystem.html#defined-props)
both say "is a kind of"; a code may have several parents.

``content`` (https://hl7.org/fhir/R4/codesystem-definitions.html#CodeSystem.content) decides
what a missing code means: only a ``complete`` code system can say a code does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

HIERARCHY_PROPERTIES = frozenset({"parent", "child"})


@dataclass(frozen=True, slots=True)
class Designation:
    """A further display of a concept (https://hl7.org/fhir/R4/codesystem-definitions.html#CodeSystem.concept.designation)."""

    value: str
    language: str | None = None
    use: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Property:
    """A concept property (https://hl7.org/fhir/R4/codesystem-definitions.html#CodeSystem.concept.property)
    with its JSON value and type key (``valueCode``, ``valueBoolean``...), as ``$lookup``
    returns it."""

    code: str
    key: str
    value: Any

    @property
    def text(self) -> str:
        """The value as a value set filter compares it (https://hl7.org/fhir/R4/valueset-definitions.html#ValueSet.compose.include.filter.value):
        ``valueBoolean`` true is ``"true"``, a ``valueCoding`` is its code."""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, dict):
            return str(self.value.get("code", ""))
        return str(self.value)


@dataclass(slots=True)
class Concept:
    """One code with what ``$lookup`` returns about it; ``parents`` and ``children`` are
    the hierarchy (the ``parent`` / ``child`` properties are read into them)."""

    code: str
    display: str | None
    definition: str | None = None
    designations: tuple[Designation, ...] = ()
    properties: tuple[Property, ...] = ()
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    def property_values(self, code: str) -> list[str]:
        if code == "parent":
            return list(self.parents)
        if code == "child":
            return list(self.children)
        return [item.text for item in self.properties if item.code == code]

    def displays(self) -> set[str]:
        """Every display a client may send for this concept, compared case-insensitively."""
        found = {self.display} if self.display else set()
        found.update(designation.value for designation in self.designations)
        return {display.casefold() for display in found}


class CodeSystem:
    """Concepts of one code system version, in their published order."""

    def __init__(
        self,
        url: str,
        version: str | None,
        *,
        name: str,
        content: str,
        case_sensitive: bool,
        concepts: Iterable[Concept],
    ) -> None:
        self.url = url
        self.version = version
        self.name = name
        self.content = content
        self.case_sensitive = case_sensitive
        self._concepts: dict[str, Concept] = {}
        for concept in concepts:
            known = self._concepts.get(concept.code)
            if known is None:
                self._concepts[concept.code] = concept
            else:  # the same code nested under a second parent: one concept, two parents
                known.parents.extend(p for p in concept.parents if p not in known.parents)
        self._folded = {} if case_sensitive else {code.casefold(): code for code in self._concepts}
        self._link_children()
        self.hierarchical = any(concept.parents for concept in self._concepts.values())
        self._ancestors: dict[str, frozenset[str]] = {}
        self._descendants: dict[str, frozenset[str]] = {}

    @property
    def complete(self) -> bool:
        """Whether a code missing here is not a code of the system at all."""
        return self.content == "complete"

    def __len__(self) -> int:
        return len(self._concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self._concepts.values())

    def get(self, code: str) -> Concept | None:
        """The concept of ``code``; for a case-insensitive system any case finds it."""
        found = self._concepts.get(code)
        if found is None and not self.case_sensitive:
            canonical = self._folded.get(code.casefold())
            found = self._concepts.get(canonical) if canonical else None
        return found

    def ancestors(self, code: str) -> frozenset[str] | None:
        """``code`` and every code that subsumes it; None when the code is not here."""
        concept = self.get(code)
        if concept is None:
            return None
        cached = self._ancestors.get(concept.code)
        if cached is None:
            cached = self._closure(concept.code, "parents")
            self._ancestors[concept.code] = cached
        return cached

    def descendants(self, code: str) -> frozenset[str] | None:
        """``code`` and every code it subsumes; None when the code is not here."""
        concept = self.get(code)
        if concept is None:
            return None
        cached = self._descendants.get(concept.code)
        if cached is None:
            cached = self._closure(concept.code, "children")
            self._descendants[concept.code] = cached
        return cached

    def subsumes(self, general: str, specific: str) -> bool | None:
        """Whether ``general`` subsumes ``specific`` (equal codes do); None when either code
        is not here."""
        above = self.ancestors(specific)
        concept = self.get(general)
        if above is None or concept is None:
            return None
        return concept.code in above

    def _closure(self, code: str, direction: str) -> frozenset[str]:
        """The codes reached from ``code`` along ``parents`` or ``children`` (iterative, so a
        deep or cyclic hierarchy in a stored CodeSystem cannot exhaust the stack)."""
        seen = {code}
        pending = [code]
        while pending:
            concept = self._concepts.get(pending.pop())
            if concept is None:
                continue
            for linked in getattr(concept, direction):
                if linked not in seen:
                    seen.add(linked)
                    pending.append(linked)
        return frozenset(seen)

    def _link_children(self) -> None:
        """Give every parent its children (the hierarchy is read as parents only)."""
        for concept in self._concepts.values():
            for parent in concept.parents:
                above = self._concepts.get(parent)
                if above is not None and concept.code not in above.children:
                    above.children.append(concept.code)


def from_resource(resource: Mapping[str, Any]) -> CodeSystem:
    """A CodeSystem resource (R4 JSON) in memory: nested concepts and the ``parent`` /
    ``child`` properties make the hierarchy."""
    concepts: list[Concept] = []
    declared_children: list[tuple[str, str]] = []
    _read_concepts(resource.get("concept", []), None, concepts, declared_children)
    by_code = {concept.code: concept for concept in concepts}
    for parent, child in declared_children:  # "child" is the reverse of "parent"
        below = by_code.get(child)
        if below is not None and parent not in below.parents:
            below.parents.append(parent)
    return CodeSystem(
        resource["url"],
        resource.get("version"),
        name=resource.get("title") or resource.get("name") or resource["url"],
        content=resource.get("content", "complete"),
        case_sensitive=resource.get("caseSensitive", True) is not False,
        concepts=concepts,
    )


def _read_concepts(
    items: Any, parent: str | None, out: list[Concept], children: list[tuple[str, str]]
) -> None:
    if not isinstance(items, list):
        return
    for item in items:
        code = item.get("code") if isinstance(item, dict) else None
        if not isinstance(code, str) or not code:
            continue
        properties = list(_properties(item.get("property")))
        parents = [each.text for each in properties if each.code == "parent"]
        if parent is not None and parent not in parents:
            parents.insert(0, parent)
        children += [(code, each.text) for each in properties if each.code == "child"]
        out.append(
            Concept(
                code=code,
                display=_text(item.get("display")),
                definition=_text(item.get("definition")),
                designations=tuple(_designations(item.get("designation"))),
                properties=tuple(p for p in properties if p.code not in HIERARCHY_PROPERTIES),
                parents=parents,
            )
        )
        _read_concepts(item.get("concept"), code, out, children)


def _properties(items: Any) -> Iterator[Property]:
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            continue
        for key, value in item.items():
            if key.startswith("value") and isinstance(value, str | bool | int | float | dict):
                yield Property(item["code"], key, value)


def _designations(items: Any) -> Iterator[Designation]:
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            use = item.get("use")
            yield Designation(
                item["value"],
                _text(item.get("language")),
                use if isinstance(use, dict) else None,
            )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
