"""URL search parameters -> a ``SearchPlan`` (https://hl7.org/fhir/R4/search.html).

Parameter names carry modifiers (``name:exact``), chains (``subject:Patient.name``) and
reverse chains (``_has:Observation:patient:code``); values carry prefixes, ``|`` systems,
``$`` composite parts, and commas for OR. Repeating a parameter ANDs it.

Unknown or unsupported parameters follow ``Prefer: handling``: lenient (the default)
ignores them and reports each in the answer; strict refuses the search with 400. Conditional
interactions always parse strictly, since ignoring a condition would widen it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_server.definitions.terminology import Terminology
from fhir_server.errors import BadRequest, Issue
from fhir_server.model.ids import is_valid_id
from fhir_server.search.indexer import words
from fhir_server.search.paths import Value
from fhir_server.search.plan import (
    AnyOf,
    Chain,
    Composite,
    Has,
    IdMatch,
    Include,
    Missing,
    Not,
    Predicate,
    SearchPlan,
    SortKey,
    TextMatch,
    TotalMode,
)
from fhir_server.search.registry import SearchParameter, SearchParameterRegistry
from fhir_server.search.terminology_modifiers import MODIFIERS as TERMINOLOGY_MODIFIERS
from fhir_server.search.terminology_modifiers import terminology_predicates
from fhir_server.search.tokens import split_escaped, unescape
from fhir_server.search.values_parser import (
    MAX_VALUE_LENGTH,
    bad,
    date_predicate,
    number_predicate,
    quantity_predicates,
    reference_predicate,
    string_predicate,
    token_predicate,
    uri_predicate,
)

MAX_CHAIN_DEPTH = 4
MAX_PARAMETERS = 100
SORTABLE = frozenset({"string", "token", "date", "number", "quantity", "reference", "uri"})
RESULT_PARAMETERS = frozenset(
    {
        "_sort",
        "_count",
        "_total",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_format",
        "_pretty",
        "_cursor",
        "_contained",
        "_containedType",
        "_type",
    }
)
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"text", "not", "of-type", "missing", "in", "not-in", "below", "above"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"identifier", "missing"},  # plus a resource type
    "uri": {"above", "below", "missing"},
    "composite": {"missing"},
    "special": set(),
}
SUMMARY_VALUES = ("true", "false", "text", "data", "count")


class Unsupported(Exception):
    """A parameter this server does not know or cannot answer: ignored or 400 by handling."""


@dataclass
class ParsedSearch:
    plan: SearchPlan
    ignored: list[Issue] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None


class SearchParser:
    def __init__(
        self,
        registry: SearchParameterRegistry,
        is_type: Callable[[str], bool],
        *,
        default_count: int = 50,
        max_count: int = 1000,
        total_limit: int = 1000,
        terminology: Terminology | None = None,
    ) -> None:
        self._registry = registry
        self._terminology = terminology
        self._is_type = is_type
        self._default_count = default_count
        self._max_count = max_count
        self._total_limit = total_limit

    def parse(
        self,
        resource_types: Sequence[str],
        pairs: Sequence[tuple[str, str]],
        *,
        strict: bool = False,
        base_url: str | None = None,
    ) -> ParsedSearch:
        """``resource_types`` empty: a system-level search over every type."""
        if len(pairs) > MAX_PARAMETERS:
            raise BadRequest(
                f"At most {MAX_PARAMETERS} search parameters", rofecare_code="rofecare-2117"
            )
        parsed = ParsedSearch(SearchPlan(tuple(resource_types), ()))
        where: list[AnyOf] = []
        sort: tuple[SortKey, ...] = ()
        count, cursor, total = self._default_count, None, "bounded"
        includes: list[Include] = []
        types = tuple(resource_types)
        for name, value in pairs:
            if len(value) > MAX_VALUE_LENGTH or len(name) > 256:
                raise bad(name[:60], "the value is too long", "rofecare-2116")
            try:
                base, _, modifier = name.partition(":")
                if base == "_sort":
                    sort = self._sort(types, value)
                elif base == "_count":
                    count = _count(value, self._max_count)
                elif base == "_cursor":
                    cursor = value
                elif base == "_total":
                    total = _total(value)
                elif base in ("_include", "_revinclude"):
                    includes.extend(self._include(types, base, modifier, value))
                elif base == "_summary":
                    if value not in SUMMARY_VALUES:
                        raise bad(
                            name, f"{value[:20]!r} is not one of {SUMMARY_VALUES}", "rofecare-2112"
                        )
                    parsed.summary = value
                elif base == "_elements":
                    parsed.elements = [item.strip() for item in value.split(",") if item.strip()]
                elif base in ("_format", "_pretty", "_type"):
                    continue
                elif base in RESULT_PARAMETERS:
                    raise Unsupported(f"{base} is not supported")
                elif value == "":
                    continue  # search.html: a parameter without a value is ignored
                else:
                    where.append(self._parameter(types, name, value, base_url, 0))
            except Unsupported as reason:
                if strict:
                    raise BadRequest(
                        f"Search parameter {name[:80]!r}: {reason}",
                        rofecare_code="rofecare-2003",
                    ) from None
                parsed.ignored.append(
                    Issue(
                        "warning",
                        "not-supported",
                        f"Search parameter {name[:80]!r} was ignored: {reason}",
                        rofecare_code="rofecare-2003",
                    )
                )
        if parsed.summary == "count":
            count = 0
            if total == "bounded":  # the count is all the client asked for
                total = "accurate"
        parsed.plan = SearchPlan(
            resource_types=types,
            where=tuple(where),
            sort=sort,
            count=count,
            cursor=cursor,
            total=total,  # type: ignore[arg-type]
            total_limit=self._total_limit,
            includes=tuple(includes),
        )
        return parsed

    # -- one filter parameter --------------------------------------------------------------

    def _parameter(
        self, types: tuple[str, ...], name: str, value: str, base_url: str | None, depth: int
    ) -> AnyOf:
        if depth > MAX_CHAIN_DEPTH:
            raise bad(name, f"chains are limited to {MAX_CHAIN_DEPTH} links", "rofecare-2114")
        if name.startswith("_has:"):
            return (self._has(types, name, value, base_url, depth),)
        head, dot, rest = name.partition(".")
        if dot:
            return self._chain(types, head, rest, value, base_url, depth)
        code, _, modifier = name.partition(":")
        if code in ("_id", "_lastUpdated", "_text", "_content"):
            return self._column(name, code, modifier, value)
        parameter = self._common(types, code)
        kind = parameter.type
        if modifier == "missing":
            return (_missing(name, parameter, value),)
        allowed = MODIFIERS.get(kind, set())
        is_target_type = kind == "reference" and self._is_type(modifier)
        if modifier and modifier not in allowed and not is_target_type:
            raise Unsupported(f"the modifier :{modifier[:40]} is not supported for {kind}")
        if kind == "composite" and not parameter.composite:
            raise Unsupported("this composite parameter cannot be evaluated")
        if kind == "special":
            raise Unsupported(f"{code} is a special parameter this server does not support")
        if kind == "token" and modifier in TERMINOLOGY_MODIFIERS:
            values = split_escaped(value, ",")
            return terminology_predicates(name, code, modifier, values, self._terminology)
        alternatives: list[Predicate] = []
        for item in split_escaped(value, ","):
            alternatives.extend(self._value(name, parameter, modifier, item, base_url))
        if modifier == "not":
            return (Not(tuple(alternatives)),)
        return tuple(alternatives)

    def _value(
        self,
        name: str,
        parameter: SearchParameter,
        modifier: str,
        value: str,
        base_url: str | None,
        code: str | None = None,
    ) -> tuple[Predicate, ...]:
        code = code or parameter.code
        kind = parameter.type
        if kind == "string":
            return (string_predicate(name, code, modifier, value),)
        if kind == "token":
            return (token_predicate(name, code, modifier, value),)
        if kind == "uri":
            return (uri_predicate(name, code, modifier, value),)
        if kind == "reference":
            return (reference_predicate(name, code, modifier, value, base_url, self._is_type),)
        if kind == "date":
            return (date_predicate(code, value),)
        if kind == "number":
            return (number_predicate(code, value),)
        if kind == "quantity":
            return quantity_predicates(name, code, value)
        if kind == "composite":
            return (self._composite(name, parameter, value, base_url),)
        raise Unsupported(f"{kind} parameters are not supported")

    def _composite(
        self, name: str, parameter: SearchParameter, value: str, base_url: str | None
    ) -> Predicate:
        kinds = [kind for kind, _ in parameter.composite[0].components]
        parts = split_escaped(value, "$")
        if len(parts) != len(kinds):
            raise bad(
                name,
                f"expected {len(kinds)} parts separated by '$', got {len(parts)}",
                "rofecare-2106",
            )
        components: list[AnyOf] = []
        for index, (kind, part) in enumerate(zip(kinds, parts, strict=True)):
            component = SearchParameter(f"{parameter.code}${index}", kind, "", _never, True)
            components.append(self._value(name, component, "", part, base_url))
        return Composite(parameter.code, tuple(components))

    def _column(self, name: str, code: str, modifier: str, value: str) -> AnyOf:
        """Parameters every store answers from its own columns or full-text index."""
        if modifier:
            raise Unsupported(f"the modifier :{modifier[:40]} is not supported on {code}")
        items = [unescape(item) for item in split_escaped(value, ",")]
        if code == "_id":
            if not all(is_valid_id(item) for item in items):
                raise bad(name, "not a valid id", "rofecare-2005")
            return (IdMatch(tuple(items)),)
        if code == "_lastUpdated":
            return tuple(date_predicate(code, item, "lastUpdated") for item in items)
        field_name = "narrative" if code == "_text" else "content"
        # Words as the full-text index splits them: a value with no word matches nothing.
        return tuple(
            TextMatch(field_name, tuple(words(item)))  # type: ignore[arg-type]
            for item in items
        )

    def _common(self, types: tuple[str, ...], code: str) -> SearchParameter:
        """The parameter ``code`` as every searched type defines it (one search type)."""
        if not types:
            found = self._registry.get("Resource", code)
            if found is None:
                raise Unsupported("only parameters of every resource apply without _type")
            return found
        parameters = [self._registry.get(resource_type, code) for resource_type in types]
        if any(parameter is None for parameter in parameters):
            missing = [t for t, p in zip(types, parameters, strict=True) if p is None]
            raise Unsupported(f"unknown parameter for {', '.join(missing[:5])}")
        first = parameters[0]
        assert first is not None
        if any(parameter is not None and parameter.type != first.type for parameter in parameters):
            raise Unsupported("the parameter has different types across the searched types")
        return first

    # -- chains ----------------------------------------------------------------------------

    def _chain(
        self,
        types: tuple[str, ...],
        head: str,
        rest: str,
        value: str,
        base_url: str | None,
        depth: int,
    ) -> AnyOf:
        """``subject:Patient.name=x``: without ``:Type``, every target type that defines the
        next parameter is tried (search.html#chaining)."""
        code, _, target = head.partition(":")
        parameter = self._common(types, code)
        if parameter.type != "reference":
            raise Unsupported(f"{code} is not a reference parameter and cannot be chained")
        if target and not self._is_type(target):
            raise Unsupported(f"{target[:40]} is not a resource type")
        candidates = (target,) if target else parameter.targets
        next_code = rest.partition(".")[0].partition(":")[0]
        chains: list[Predicate] = []
        for target_type in candidates:
            if next_code.startswith("_") or self._registry.get(target_type, next_code):
                inner = self._parameter((target_type,), rest, value, base_url, depth + 1)
                chains.append(Chain(code, target_type, (inner,)))
        if not chains:
            raise Unsupported(f"no target of {code} has a parameter {next_code[:40]!r}")
        return tuple(chains)

    def _has(
        self, types: tuple[str, ...], name: str, value: str, base_url: str | None, depth: int
    ) -> Predicate:
        """``_has:Observation:patient:code=x``: resources some Observation points at via
        ``patient`` with that code; the rest may itself be a ``_has`` (search.html#has)."""
        parts = name.split(":", 3)
        if len(parts) != 4:
            raise bad(name, "expected _has:Type:reference:parameter", "rofecare-2118")
        _, source_type, code, rest = parts
        if not self._is_type(source_type):
            raise Unsupported(f"{source_type[:40]} is not a resource type")
        parameter = self._registry.get(source_type, code)
        if parameter is None or parameter.type != "reference":
            raise Unsupported(f"{source_type}.{code[:40]} is not a reference parameter")
        if types and parameter.targets and not set(types) & set(parameter.targets):
            raise Unsupported(f"{source_type}.{code} never points at {', '.join(types)}")
        inner = self._parameter((source_type,), rest, value, base_url, depth + 1)
        return Has(source_type, code, (inner,))

    # -- result parameters -----------------------------------------------------------------

    def _sort(self, types: tuple[str, ...], value: str) -> tuple[SortKey, ...]:
        keys: list[SortKey] = []
        for item in value.split(","):
            item = item.strip()
            descending = item.startswith("-")
            code = item.lstrip("-")
            if code in ("_id", "_lastUpdated"):
                keys.append(SortKey(code, code, descending))
                continue
            parameter = self._common(types, code)
            if parameter.type not in SORTABLE:
                raise Unsupported(f"{code} ({parameter.type}) cannot be sorted on")
            keys.append(SortKey(code, parameter.type, descending))
        return tuple(keys)

    def _include(
        self, types: tuple[str, ...], base: str, modifier: str, value: str
    ) -> list[Include]:
        reverse = base == "_revinclude"
        if modifier not in ("", "iterate", "recurse"):
            raise Unsupported(f"the modifier :{modifier[:40]} is not supported on {base}")
        iterate = modifier in ("iterate", "recurse")
        if value == "*":
            return [Include("*", "*", None, reverse, iterate)]
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise bad(base, f"{value[:60]!r} is not Type:parameter[:targetType]", "rofecare-2111")
        source_type, code = parts[0], parts[1]
        target_type = parts[2] if len(parts) == 3 else None
        if not self._is_type(source_type) or (target_type and not self._is_type(target_type)):
            raise Unsupported(f"{value[:60]!r} names an unknown resource type")
        if code != "*":
            parameter = self._registry.get(source_type, code)
            if parameter is None or parameter.type != "reference":
                raise Unsupported(f"{source_type}.{code[:40]} is not a reference parameter")
        if not reverse and not iterate and types and source_type not in types:
            raise Unsupported(f"{source_type} is not the searched type")
        return [Include(source_type, code, target_type, reverse, iterate)]


def _missing(name: str, parameter: SearchParameter, value: str) -> Predicate:
    if value not in ("true", "false"):
        raise bad(name, ":missing takes true or false", "rofecare-2107")
    code, kind = parameter.code, parameter.type
    if kind == "composite":
        if not parameter.composite:
            raise Unsupported("this composite parameter cannot be evaluated")
        code, kind = f"{code}$0", parameter.composite[0].components[0][0]
    return Missing(code, kind, value == "true")


def _count(value: str, maximum: int) -> int:
    if not value.isdigit() or len(value) > 9:
        raise BadRequest(
            f"_count={value[:20]!r} is not a whole number", rofecare_code="rofecare-1603"
        )
    return min(int(value), maximum)


def _total(value: str) -> TotalMode:
    if value == "none":
        return "none"
    if value == "estimate":
        return "estimate"
    if value == "accurate":
        return "accurate"
    raise BadRequest(
        f"_total={value[:20]!r}: expected none, estimate or accurate",
        rofecare_code="rofecare-2110",
    )


def _never(_: dict[str, Any]) -> list[Value]:
    return []
