"""The backend-neutral search plan: what a query means, before any SQL or MQL.

The parser (``search/parser.py``) turns URL parameters into a ``SearchPlan``; each storage
backend compiles the plan into its own query language. Prefix semantics (``ge``, ``sa``,
``ap``...) and implicit precision are resolved here into plain bounds on stored columns, so
every backend compares the same way and none re-implements search.html#prefix.

Stored columns a bound may name, per value kind:
  date and ``_lastUpdated``: ``low``, ``high`` (epoch microseconds, [low, high); an open end is
  unbounded); number: ``value``; quantity: ``value`` or ``canonical_value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Operator = Literal["<", "<=", ">", ">=", "="]
TotalMode = Literal["none", "bounded", "estimate", "accurate"]
"""``bounded`` is the default when a search names no ``_total``: the exact total when at most
``SearchPlan.total_limit`` resources match, else none (counting a large result set costs
more than finding its first page, and R4 makes ``Bundle.total`` optional unless
``_total=accurate`` asks for it)."""


@dataclass(frozen=True)
class Bound:
    column: str
    op: Operator
    value: float


Bounds = tuple[tuple[Bound, ...], ...]
"""An OR of ANDs of bounds: ``((a, b), (c,))`` means (a and b) or c."""


@dataclass(frozen=True)
class TokenMatch:
    """``system`` None matches any system, "" only codes without one; ``code`` None any code."""

    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True)
class TokenText:
    """``:text``: Coding.display or CodeableConcept.text starts with ``text`` (normalized)."""

    param: str
    text: str


@dataclass(frozen=True)
class StringMatch:
    param: str
    mode: Literal["prefix", "exact", "contains"]
    value: str  # normalized for prefix and contains, as given for exact


@dataclass(frozen=True)
class RangeMatch:
    """Date, number or quantity bounds; quantities may also pin the unit."""

    param: str
    kind: Literal["date", "number", "quantity", "lastUpdated"]
    bounds: Bounds
    system: str | None = None
    unit: str | None = None  # the unit code; the canonical code when ``canonical``
    canonical: bool = False


@dataclass(frozen=True)
class ReferenceMatch:
    """``target_type`` None: any type (a bare id); ``url`` for absolute and canonical ones."""

    param: str
    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class CompartmentMatch:
    """In ``target_type/target_id``'s compartment: one of the (resource type, reference
    parameter) ``links`` points at it (https://hl7.org/fhir/R4/compartmentdefinition.html)."""

    links: tuple[tuple[str, str], ...]
    target_type: str
    target_id: str


@dataclass(frozen=True)
class UriMatch:
    param: str
    mode: Literal["eq", "above", "below"]
    value: str


@dataclass(frozen=True)
class IdMatch:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class TextMatch:
    """``_text`` (narrative) and ``_content`` (all strings): every word must occur."""

    field: Literal["narrative", "content"]
    words: tuple[str, ...]


@dataclass(frozen=True)
class Missing:
    """``:missing``: ``missing`` True selects resources without any value of ``param``."""

    param: str
    kind: str  # the search type, which tells the backend where values live
    missing: bool


@dataclass(frozen=True)
class Composite:
    """All components must match values of one composite group (``code$i`` params); each
    component is an OR of alternatives on one value table (a quantity in UCUM or as given)."""

    param: str
    components: tuple[AnyOf, ...]


@dataclass(frozen=True)
class Not:
    """Resources matching none of ``alternatives`` (``:not``, ``ne``), including those with
    no value at all, per search.html#token."""

    alternatives: AnyOf


@dataclass(frozen=True)
class Chain:
    """The reference ``param`` points at a ``target_type`` resource that matches ``where``."""

    param: str
    target_type: str
    where: Where


@dataclass(frozen=True)
class Has:
    """Reverse chain: some ``source_type`` resource whose ``param`` points here matches."""

    source_type: str
    param: str
    where: Where


Predicate = (
    TokenMatch
    | TokenText
    | StringMatch
    | RangeMatch
    | ReferenceMatch
    | CompartmentMatch
    | UriMatch
    | IdMatch
    | TextMatch
    | Missing
    | Composite
    | Not
    | Chain
    | Has
)
AnyOf = tuple[Predicate, ...]
Where = tuple[AnyOf, ...]
"""An AND of ORs: repeated parameters AND, comma-separated values OR (search.html#combining)."""


@dataclass(frozen=True)
class SortKey:
    """``param`` is a search parameter code, or ``_id`` / ``_lastUpdated``."""

    param: str
    kind: str
    descending: bool


@dataclass(frozen=True)
class Include:
    """``_include=source:param[:target]`` or, when ``reverse``, ``_revinclude``.

    ``param`` "*" means every reference parameter of the source type.
    """

    source_type: str
    param: str
    target_type: str | None
    reverse: bool
    iterate: bool


@dataclass(frozen=True)
class SearchPlan:
    resource_types: tuple[str, ...]
    where: Where
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    cursor: str | None = None
    total: TotalMode = "accurate"
    total_limit: int = 1000  # for total="bounded"
    includes: tuple[Include, ...] = ()


def indexed_types(plan: SearchPlan) -> frozenset[str] | None:
    """The resource types whose index entries answering ``plan`` may read; None: any type.

    A backend that brings its index up to date lazily (the SQLite index log) needs only
    these types current before it runs the plan. ``_include`` reads the references of the
    matches, ``_revinclude`` those of its source type; ``:iterate`` may reach any type."""
    if not plan.resource_types:
        return None
    types = set(plan.resource_types)
    for include in plan.includes:
        if include.iterate or include.source_type == "*":
            return None
        types.add(include.source_type)
    _add_where_types(plan.where, types)
    return frozenset(types)


def _add_where_types(where: Where, types: set[str]) -> None:
    for alternatives in where:
        _add_predicate_types(alternatives, types)


def _add_predicate_types(alternatives: AnyOf, types: set[str]) -> None:
    for predicate in alternatives:
        if isinstance(predicate, Chain):
            types.add(predicate.target_type)
            _add_where_types(predicate.where, types)
        elif isinstance(predicate, Has):
            types.add(predicate.source_type)
            _add_where_types(predicate.where, types)
        elif isinstance(predicate, CompartmentMatch):
            types.update(owner for owner, _ in predicate.links)
        elif isinstance(predicate, Not):
            _add_predicate_types(predicate.alternatives, types)
        elif isinstance(predicate, Composite):
            for component in predicate.components:
                _add_predicate_types(component, types)
