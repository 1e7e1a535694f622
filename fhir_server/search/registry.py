"""The search parameters of every resource type, with their expressions compiled once.

Source: the official R4 SearchParameter bundle shipped in ``definitions/data`` (see its
SOURCE.md). Three entries there are not R4 (Medplum additions) and are skipped, so the
server claims only what R4 defines.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_server.definitions.registry import DATA_DIR, load_element_types, profile_resources
from fhir_server.search.paths import (
    CompiledExpression,
    RelativePath,
    Value,
    compile_expression,
    compile_path,
    compile_relative,
    split_union,
    union_of_reads,
)

NOT_R4 = frozenset(
    {"DetectedIssue-status", "DeviceDefinition-classification", "ServiceRequest-order-detail"}
)
Evaluator = Callable[[dict[str, Any]], list[Value]]


@dataclass(frozen=True)
class CompositeRoot:
    """One member of a composite's root expression with its components compiled relative to
    it: each selected item is a group whose component values must match together."""

    evaluate: Evaluator
    components: tuple[tuple[str, tuple[RelativePath, ...]], ...]  # (search type, paths)
    reads: frozenset[str] | None  # as SearchParameter.reads


@dataclass(frozen=True)
class SearchParameter:
    """One parameter as it applies to one resource type."""

    code: str
    type: str  # string, token, date, number, quantity, reference, uri, composite, special
    expression: str
    evaluate: Evaluator
    compiled: bool  # False: evaluated by the general FHIRPath engine
    targets: tuple[str, ...] = ()
    url: str = ""
    composite: tuple[CompositeRoot, ...] = ()
    reads: frozenset[str] | None = None  # top-level keys read (meta.x: in meta); None: any

    @property
    def indexed(self) -> bool:
        """Whether writes store values for it (composites only when every part compiled)."""
        if self.type == "composite":
            return bool(self.composite)
        return self.type != "special"


class SearchParameterRegistry:
    """Parameters per type; those defined on ``Resource`` (``_id``, ``_tag``...) apply to all."""

    def __init__(
        self,
        by_type: dict[str, dict[str, SearchParameter]],
        definitions: tuple[dict[str, Any], ...] = (),
    ) -> None:
        common = by_type.get("Resource", {})
        self._by_type = {
            name: {**common, **own} for name, own in by_type.items() if name != "Resource"
        }
        self._common = common
        self.definitions = definitions

    def for_type(self, resource_type: str) -> dict[str, SearchParameter]:
        return self._by_type.get(resource_type, self._common)

    def get(self, resource_type: str, code: str) -> SearchParameter | None:
        return self.for_type(resource_type).get(code)

    def extended(self, extra: list[dict[str, Any]]) -> SearchParameterRegistry:
        """A registry with ``extra`` SearchParameter resources added (a code defined again for
        a type replaces the earlier one): Rofecare's own and those POSTed at run time.
        Without any, this registry itself: building one costs ~0.4 s, paid at every start
        of a server worker or a command-line tool that finds no stored SearchParameter."""
        if not extra:
            return self
        return build_registry([*self.definitions, *extra])

    def __len__(self) -> int:
        return sum(len(parameters) for parameters in self._by_type.values())


@functools.cache
def load_search_parameters() -> SearchParameterRegistry:
    """The official R4 parameters plus Rofecare's own (``profiles/``)."""
    bundle = json.loads((DATA_DIR / "search-parameters.json").read_text())
    official = [
        entry["resource"] for entry in bundle["entry"] if entry["resource"]["id"] not in NOT_R4
    ]
    return build_registry([*official, *profile_resources("SearchParameter")])


def build_registry(definitions: list[dict[str, Any]]) -> SearchParameterRegistry:
    element_types = load_element_types()
    by_url = {d["url"]: d for d in definitions if isinstance(d.get("url"), str)}
    by_type: dict[str, dict[str, SearchParameter]] = {}
    for definition in definitions:
        expression = definition.get("expression")
        if not expression:
            continue
        for resource_type in definition.get("base", []):
            own = _members_for(expression, resource_type)
            if not own:
                continue
            parameter = _parameter(definition, own, element_types, by_url)
            by_type.setdefault(resource_type, {})[definition["code"]] = parameter
    return SearchParameterRegistry(by_type, tuple(definitions))


def _members_for(expression: str, resource_type: str) -> str:
    """The union members of a multi-type expression that can apply to ``resource_type``."""
    members = split_union(expression)
    roots: tuple[str, ...] = (
        resource_type + ".",
        resource_type + " ",
        "Resource.",
        "DomainResource.",
    )
    if resource_type == "Resource":
        roots = ("Resource.",)
    own = [
        member
        for member in members
        if member.lstrip("(").startswith(roots) or member.lstrip("(") == resource_type
    ]
    if not own and all(not member[:1].isupper() for member in members):
        # A few R4 expressions are relative ('name | alias'): root them at the type.
        own = [f"{resource_type}.{member}" for member in members]
    return " | ".join(own)


def _parameter(
    definition: dict[str, Any],
    expression: str,
    element_types: dict[str, dict[str, list[str]]],
    by_url: dict[str, dict[str, Any]],
) -> SearchParameter:
    compiled: CompiledExpression | None = compile_expression(expression, element_types)
    evaluate: Evaluator | None = compiled.evaluate if compiled else None
    exists = _EXISTS_NOT_FALSE.fullmatch(expression)
    if exists and evaluate is None:
        evaluate = _exists_not_false(exists["path"], element_types)
    if evaluate is None:
        evaluate = _GeneralEvaluator(expression)
    composite: tuple[CompositeRoot, ...] = ()
    reads = compiled.reads if compiled is not None else None
    if definition["type"] == "composite":
        composite = _composite_roots(definition, expression, element_types, by_url)
        reads = union_of_reads(root.reads for root in composite) if composite else None
    return SearchParameter(
        code=definition["code"],
        type=definition["type"],
        expression=expression,
        evaluate=evaluate,
        compiled=not isinstance(evaluate, _GeneralEvaluator),
        targets=tuple(definition.get("target", [])),
        url=definition.get("url", ""),
        composite=composite,
        reads=reads,
    )


def _composite_roots(
    definition: dict[str, Any],
    expression: str,
    element_types: dict[str, dict[str, list[str]]],
    by_url: dict[str, dict[str, Any]],
) -> tuple[CompositeRoot, ...]:
    """Compile each component against each root member; () when any part does not compile
    (the parameter is then reported as unsupported rather than answered wrongly)."""
    roots: list[CompositeRoot] = []
    for member in split_union(expression):
        root = compile_path(member, element_types)
        if root is None:
            return ()
        components: list[tuple[str, tuple[RelativePath, ...]]] = []
        for component in definition.get("component", []):
            target = by_url.get(component.get("definition", ""))
            paths = compile_relative(member, component.get("expression", ""), element_types)
            if target is None or paths is None:
                return ()
            components.append((target["type"], tuple(paths)))
        roots.append(CompositeRoot(root.evaluate, tuple(components), root.reads))
    return tuple(roots)


# ``Patient.deceased.exists() and Patient.deceased != false``: true or false, always.
_EXISTS_NOT_FALSE = re.compile(r"(?P<path>[A-Z][\w.]*)\.exists\(\) and (?P=path) != false")


def _exists_not_false(
    path: str, element_types: dict[str, dict[str, list[str]]]
) -> Evaluator | None:
    compiled = compile_path(path, element_types)
    if compiled is None:
        return None
    select = compiled.evaluate

    def evaluate(resource: dict[str, Any]) -> list[Value]:
        found = select(resource)
        return [Value(any(value.value is not False for value in found), "boolean")]

    return evaluate


class _GeneralEvaluator:
    """A fhirpathpy evaluator (compiled once) for expressions the fast path does not cover."""

    def __init__(self, expression: str) -> None:
        from fhirpathpy import compile as fhirpath_compile
        from fhirpathpy.models import models

        self._function = fhirpath_compile(expression, models["r4"])

    def __call__(self, resource: dict[str, Any]) -> list[Value]:
        try:
            found = self._function(resource, None)
        except Exception:  # the engine raises bare Exceptions for what it does not implement
            return []
        return [Value(item, _kind(item)) for item in found if item is not None]


def _kind(item: Any) -> str:
    if isinstance(item, bool):
        return "boolean"
    if isinstance(item, (int, float)):
        return "decimal"
    if isinstance(item, str):
        return "string"
    return "Element"
