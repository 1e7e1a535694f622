"""Search parameter expressions compiled once into direct walks over resource JSON.

Why not evaluate every expression with a FHIRPath engine: indexing runs on every write, a
resource type has dozens of search parameters, and a general engine costs ~0.1 ms per
expression; fhirpathpy also lacks ``resolve()``, which 50 of the R4 expressions use in
``.where(resolve() is Patient)``. Almost all R4 search expressions (about 1,700 of 1,772
union members) are a path with optional ``as Type`` / ``.as(Type)``, ``.where(resolve() is
Type)``, ``.where(element='literal')`` or ``[n]``. Those are compiled here, typed by the R4
element table (so ``Observation.value`` finds ``valueQuantity`` and knows it is a Quantity);
anything else returns None from ``compile_path`` and is left to a general engine.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

_STEP = r"[a-z][A-Za-z0-9]*"
_PATH = re.compile(rf"(?P<root>[A-Z][A-Za-z]*)(?P<steps>(?:\.{_STEP}(?:\[\d+\])?)*)")
_SUFFIX = re.compile(
    r"(?:\s+as\s+(?P<as>[A-Za-z]+))$"
    r"|\.as\((?P<as_call>[A-Za-z]+)\)$"
    r"|\.where\(resolve\(\)\s+is\s+(?P<resolve>[A-Z][A-Za-z]*)\)$"
    r"|\.where\((?P<field>[a-z][A-Za-z]*)\s*=\s*'(?P<literal>[^']*)'\)$"
)


ANY_RESOURCE = ("Resource", "DomainResource")
# id, meta, implicitRules, language are typed alike in every resource; any table serves.
_COMMON_ELEMENTS_OF = "Basic"


class Value(NamedTuple):
    """One value an expression selects, with its FHIR type code (``Quantity``, ``date``).

    A named tuple rather than a frozen dataclass: every write builds a few hundred of these,
    and a tuple is built in C (indexing a Patient: 104 -> 100 us)."""

    value: Any
    type: str


@dataclass(frozen=True)
class _Step:
    name: str
    index: int | None
    choice_types: tuple[str, ...] | None  # set for choice elements: the JSON key suffixes
    types: tuple[str, ...]

    @functools.cached_property
    def keys(self) -> tuple[str, ...]:
        """The JSON keys this step reads: its name, or one per type of a choice element."""
        return tuple(key for key, _ in self.selections)

    @functools.cached_property
    def selections(self) -> tuple[tuple[str, str], ...]:
        """(JSON key, type of what it holds) for each key this step reads, worked out once:
        the walk runs a last step ~19 times per resource indexed, and it built a choice
        element's keys there (``valueQuantity``, ``valueString``... eleven for
        ``Observation.value``; 940,000 ``str.upper`` calls over the Synthea sample). With
        ``_selected``'s plain loops: 9,544-12,214 -> 12,530-15,227 resources/s
        (benchmarks/indexing.py, docs/benchmarks.md)."""
        if self.choice_types is None:
            kind = self.types[0] if len(self.types) == 1 else "Element"
            return ((self.name, _item_kind(kind)),)
        return tuple(
            (self.name + code[0].upper() + code[1:], _item_kind(code)) for code in self.choice_types
        )

    @functools.cached_property
    def kinds(self) -> dict[str, str]:
        """``selections`` as a dict: JSON key -> type of what it holds."""
        return dict(self.selections)


def _item_kind(type_code: str) -> str:
    """A contentReference (``@Bundle.entry``) holds resources: typed by their resourceType."""
    return "Resource" if type_code.startswith("@") else type_code


@dataclass(frozen=True)
class _Filter:
    kind: str  # "as", "resolve" or "field"
    argument: str
    literal: str = ""


class CompiledPath:
    """One compiled union member: root type, typed steps, an optional final filter."""

    def __init__(self, root: str, steps: tuple[_Step, ...], final: _Filter | None) -> None:
        self.root = root
        self.steps = steps
        self.final = final

    def evaluate(self, resource: dict[str, Any]) -> list[Value]:
        resource_type = resource.get("resourceType")
        if resource_type != self.root and self.root not in ANY_RESOURCE:
            return []
        return _walk(resource, str(resource_type), self.steps, self.final)

    @property
    def reads(self) -> frozenset[str] | None:
        """The resource's top-level JSON keys this path starts from (None: the resource
        itself): without any of them it selects nothing. A path into ``meta`` names the
        key it reads there (``meta.tag``): every stored resource has a ``meta``, most with
        only ``versionId`` and ``lastUpdated``, where ``_tag``, ``_profile``, ``_security``
        and ``_source`` find nothing."""
        if not self.steps:
            return None
        first = self.steps[0]
        if first.keys == ("meta",) and first.index is None and len(self.steps) > 1:
            return frozenset(f"meta.{key}" for key in self.steps[1].keys)
        return frozenset(first.keys)


class CompiledExpression:
    """A whole search expression: the union (``|``) of its compiled members."""

    def __init__(self, members: tuple[CompiledPath, ...]) -> None:
        self.members = members

    @property
    def reads(self) -> frozenset[str] | None:
        return union_of_reads(member.reads for member in self.members)

    def evaluate(self, resource: dict[str, Any]) -> list[Value]:
        if len(self.members) == 1:
            return self.members[0].evaluate(resource)
        # FHIRPath's union removes duplicates (``Patient.name.given | ...`` twice 'Ada').
        values: list[Value] = []
        seen: set[bytes] = set()
        for member in self.members:
            for value in member.evaluate(resource):
                key = orjson.dumps(value.value, option=orjson.OPT_SORT_KEYS)
                if key not in seen:
                    seen.add(key)
                    values.append(value)
        return values


def union_of_reads(each: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """The top-level keys any of several paths starts from; None when one starts at the
    root (it may find values whatever keys the resource has)."""
    keys: set[str] = set()
    for reads in each:
        if reads is None:
            return None
        keys |= reads
    return frozenset(keys)


def compile_expression(
    expression: str, element_types: dict[str, dict[str, list[str]]]
) -> CompiledExpression | None:
    """The fast form of ``expression``, or None when some member needs a general engine."""
    members = []
    for member in split_union(expression):
        compiled = compile_path(member, element_types)
        if compiled is None:
            return None
        members.append(compiled)
    return CompiledExpression(tuple(members))


def compile_path(text: str, element_types: dict[str, dict[str, list[str]]]) -> CompiledPath | None:
    text = _strip_parentheses(text.strip())
    typed = _TYPED_CHOICE.fullmatch(text)
    if typed:
        return _compile_typed_choice(typed, element_types)
    final: _Filter | None = None
    suffix = _SUFFIX.search(text)
    if suffix:
        if suffix["as"] or suffix["as_call"]:
            final = _Filter("as", suffix["as"] or suffix["as_call"])
        elif suffix["resolve"]:
            final = _Filter("resolve", suffix["resolve"])
        else:
            final = _Filter("field", suffix["field"], suffix["literal"])
        text = _strip_parentheses(text[: suffix.start()].strip())
    match = _PATH.fullmatch(text)
    if match is None:
        return None
    root = match["root"]
    if root in ANY_RESOURCE:  # Resource.id, Resource.meta.tag: the same elements everywhere
        steps = _typed_steps(_COMMON_ELEMENTS_OF, match["steps"], element_types)
    elif root in element_types:
        steps = _typed_steps(root, match["steps"], element_types)
    else:
        return None
    if steps is None:
        return None
    return CompiledPath(root, steps[0], final)


# ``(Observation.value as CodeableConcept).text``: a choice narrowed to one type, then a path.
_TYPED_CHOICE = re.compile(
    rf"\((?P<inner>[A-Z][A-Za-z]*(?:\.{_STEP})+)\s+as\s+(?P<type>[A-Za-z]+)\)"
    rf"\.(?P<rest>{_STEP}(?:\.{_STEP})*)"
)


def _compile_typed_choice(
    match: re.Match[str], element_types: dict[str, dict[str, list[str]]]
) -> CompiledPath | None:
    inner = _PATH.fullmatch(match["inner"])
    if inner is None or inner["root"] not in element_types:
        return None
    resolved = _typed_steps(inner["root"], inner["steps"], element_types)
    if resolved is None:
        return None
    steps = list(resolved[0])
    last, type_code = steps[-1], match["type"]
    if last.choice_types is None or type_code not in last.choice_types:
        return None
    steps[-1] = _Step(last.name, last.index, (type_code,), (type_code,))
    rest = _typed_steps(type_code, "." + match["rest"], element_types)
    if rest is None:
        return None
    return CompiledPath(inner["root"], (*steps, *rest[0]), None)


class RelativePath:
    """A path evaluated from an element rather than a resource: a composite's component
    (``value.as(Quantity)`` inside each ``Observation.component``)."""

    def __init__(self, steps: tuple[_Step, ...], final: _Filter | None) -> None:
        self.steps = steps
        self.final = final

    def evaluate(self, node: Any) -> list[Value]:
        return _walk(node, "Element", self.steps, self.final)


def compile_relative(
    context: str, expression: str, element_types: dict[str, dict[str, list[str]]]
) -> list[RelativePath] | None:
    """The members of ``expression`` compiled relative to the element ``context`` (a plain
    path such as ``Observation.component``), or None when some member is not a plain path."""
    match = _PATH.fullmatch(_strip_parentheses(context.strip()))
    if match is None:
        return None
    root = _COMMON_ELEMENTS_OF if match["root"] in ANY_RESOURCE else match["root"]
    resolved = _typed_steps(root, match["steps"], element_types)
    if resolved is None:
        return None
    owner, prefix = resolved[1]
    members: list[RelativePath] = []
    for member in split_union(expression):
        text = _strip_parentheses(member)
        final: _Filter | None = None
        suffix = _SUFFIX.search(text)
        if suffix and (suffix["as"] or suffix["as_call"]):
            final = _Filter("as", suffix["as"] or suffix["as_call"])
            text = _strip_parentheses(text[: suffix.start()].strip())
        if not re.fullmatch(rf"{_STEP}(?:\.{_STEP})*", text):
            return None
        steps = _typed_steps(owner, "." + text, element_types, prefix)
        if steps is None:
            return None
        members.append(RelativePath(steps[0], final))
    return members


def _typed_steps(
    root: str,
    text: str,
    element_types: dict[str, dict[str, list[str]]],
    start_prefix: str = "",
) -> tuple[tuple[_Step, ...], tuple[str, str]] | None:
    """Resolve each step against the element table, following datatypes and references.

    Returns the steps and where the walk ended (owner type, path prefix inside it), so a
    relative expression can continue from there.
    """
    steps: list[_Step] = []
    owner, prefix = root, start_prefix
    for raw in filter(None, text.split(".")):
        name, _, rest = raw.partition("[")
        index = int(rest[:-1]) if rest else None
        table = element_types.get(owner, {})
        path = prefix + name
        if path in table:
            types = table[path]
            choice = None
        elif path + "[x]" in table:
            types = table[path + "[x]"]
            choice = tuple(types)
        else:
            return None
        steps.append(_Step(name, index, choice, tuple(types)))
        if len(types) == 1 and types[0].startswith("@"):  # contentReference: reuse that part
            owner, _, target = types[0][1:].partition(".")
            prefix = target + "."
        elif len(types) == 1 and types[0] in ("BackboneElement", "Element") and choice is None:
            prefix = path + "."
        elif len(types) == 1 and types[0] in element_types:
            owner, prefix = types[0], ""
        elif choice is not None or len(types) != 1:
            owner, prefix = "", ""  # a choice or primitive: nothing can follow but a filter
        else:
            owner, prefix = types[0], ""
    return tuple(steps), (owner, prefix)


def _walk(
    start: Any, start_type: str, steps: tuple[_Step, ...], final: _Filter | None
) -> list[Value]:
    """Follow ``steps`` from ``start``; only the last step's values are typed.

    Why raw nodes until the last step: a resource type has dozens of parameters and most
    find nothing in a given resource, so the walk must cost little when it ends early, and
    an intermediate node's type is never looked at.
    """
    if steps:
        nodes = [start]
        for step in steps[:-1]:
            nodes = _children(nodes, step)
            if not nodes:
                return []
        values = _selected(nodes, steps[-1])
    else:
        values = [Value(start, start_type)]
    if final is not None:
        values = [value for value in values if _keep(value, final)]
    return values


def _children(nodes: list[Any], step: _Step) -> list[Any]:
    """The untyped nodes ``step`` reaches from ``nodes`` (non-objects reach nothing)."""
    names, index = step.keys, step.index
    found: list[Any] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        for name in names:
            item = node.get(name)
            if item is None:
                continue
            if isinstance(item, list):
                found.extend(item if index is None else item[index : index + 1])
            elif not index:
                found.append(item)
    return found


def _selected(nodes: list[Any], step: _Step) -> list[Value]:
    """The typed values the last ``step`` reaches from ``nodes``. Plain loops, no
    generators: this is the innermost part of indexing. A choice element with more types
    than the node has keys (``component.value[x]``: eleven types, two or three keys) looks
    the node's keys up rather than every type's key in the node."""
    values: list[Value] = []
    selections, index = step.selections, step.index
    many = len(selections) > 2
    for node in nodes:
        if not isinstance(node, dict):
            continue
        pairs = selections
        if many and len(node) < len(selections):
            kinds = step.kinds
            pairs = tuple((key, kinds[key]) for key in node if key in kinds)
        for key, kind in pairs:
            found = node.get(key)
            if found is None:
                continue
            if isinstance(found, list):
                for item in found if index is None else found[index : index + 1]:
                    if item is not None:
                        typed = item.get("resourceType", kind) if kind == "Resource" else kind
                        values.append(Value(item, typed))
            elif not index:
                typed = found.get("resourceType", kind) if kind == "Resource" else kind
                values.append(Value(found, typed))
    return values


def _keep(value: Value, final: _Filter) -> bool:
    if final.kind == "as":
        return value.type.lower() == final.argument.lower() or (
            final.argument in _QUANTITY_PROFILES and value.type == "Quantity"
        )
    if final.kind == "resolve":
        reference = value.value.get("reference") if isinstance(value.value, dict) else None
        if not isinstance(reference, str):
            return False
        parts = reference.split("?")[0].split("/")
        if len(parts) >= 2 and parts[-2] == "_history":
            parts = parts[:-2]
        return len(parts) >= 2 and parts[-2] == final.argument
    return isinstance(value.value, dict) and value.value.get(final.argument) == final.literal


# ``onset.as(Age)``: Age is a profile of Quantity, and the JSON key says valueQuantity/onsetAge.
_QUANTITY_PROFILES = ("Age", "Duration", "Distance", "Count", "MoneyQuantity", "SimpleQuantity")


def split_union(expression: str) -> list[str]:
    """Split on top-level ``|`` (outside parentheses and quotes)."""
    return list(_split_union(expression))


@functools.lru_cache(maxsize=8_192)
def _split_union(expression: str) -> tuple[str, ...]:
    """Remembered: building the registry splits each of ~1,400 expressions once per base
    type (7,260 calls, a quarter of a second of every start)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in expression:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "|" and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(part.strip() for part in parts if part.strip())


def _strip_parentheses(text: str) -> str:
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            return False
    return depth == 0
