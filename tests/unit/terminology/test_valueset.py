"""ValueSet.compose semantics: includes, excludes, filters, imports, and "cannot tell"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from terminology.codesystem import CodeSystem, from_resource
from terminology.valueset import Membership, ValueSet
from tests.unit.terminology.test_codesystem import SYSTEM, _system

OTHER = "http://example.org/fhir/CodeSystem/not-held"


class _Source:
    """A provider holding the shapes code system and the value sets given."""

    def __init__(self, value_sets: Mapping[str, dict[str, Any]], content: str = "complete"):
        self.system = from_resource(_system(content=content))
        self.resources = value_sets

    def code_system(self, url: str) -> CodeSystem | None:
        return self.system if url == SYSTEM else None

    def in_system(self, system: str, code: str) -> Membership:
        if system != SYSTEM:
            return None
        found = self.system.get(code) is not None
        return True if found else (False if self.system.complete else None)

    def value_set(self, canonical: str) -> ValueSet | None:
        resource = self.resources.get(canonical)
        return None if resource is None else ValueSet(resource, self)


def _value_set(*includes: dict[str, Any], exclude: list[Any] | None = None) -> dict[str, Any]:
    compose: dict[str, Any] = {"include": list(includes)}
    if exclude is not None:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "url": "http://example.org/vs", "compose": compose}


def _codes(value_set: ValueSet) -> list[str] | None:
    entries = value_set.expansion()
    return None if entries is None else [entry.code for entry in entries]


def _compile(resource: dict[str, Any], **value_sets: dict[str, Any]) -> ValueSet:
    source = _Source({f"http://example.org/{name}": vs for name, vs in value_sets.items()})
    return ValueSet(resource, source)


def test_whole_system() -> None:
    value_set = _compile(_value_set({"system": SYSTEM}))
    assert _codes(value_set) == ["shape", "polygon", "square", "round", "circle", "rhombus"]
    assert value_set.contains(SYSTEM, "square") is True
    assert value_set.contains(SYSTEM, "triangle") is False
    assert value_set.contains(OTHER, "square") is False
    assert value_set.systems() == {SYSTEM}


def test_concept_list_keeps_its_order_and_displays_and_drops_non_codes() -> None:
    include = {
        "system": SYSTEM,
        "concept": [
            {"code": "round"},
            {"code": "square", "display": "Carré"},
            {"code": "triangle", "display": "not a code of the system"},
        ],
    }
    value_set = _compile(_value_set(include))
    entries = value_set.expansion()
    assert entries is not None
    assert [(entry.code, entry.display) for entry in entries] == [
        ("round", "Round"),
        ("square", "Carré"),
    ]
    assert value_set.contains(SYSTEM, "triangle") is False
    assert value_set.declared_display(SYSTEM, "square") == "Carré"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([{"property": "concept", "op": "is-a", "value": "polygon"}], ["polygon", "square"]),
        ([{"property": "concept", "op": "descendent-of", "value": "polygon"}], ["square"]),
        (
            [{"property": "concept", "op": "is-not-a", "value": "polygon"}],
            ["shape", "round", "circle", "rhombus"],
        ),
        ([{"property": "concept", "op": "=", "value": "round"}], ["round"]),
        ([{"property": "code", "op": "in", "value": "round, circle"}], ["round", "circle"]),
        ([{"property": "parent", "op": "=", "value": "round"}], ["circle"]),
        ([{"property": "sides", "op": "=", "value": "0"}], ["circle"]),
        (
            [
                {"property": "concept", "op": "is-a", "value": "shape"},
                {"property": "concept", "op": "is-not-a", "value": "polygon"},
            ],
            ["shape", "round", "circle"],
        ),
        ([{"property": "concept", "op": "is-a", "value": "no-such-code"}], []),
    ],
)
def test_filters(filters: list[dict[str, str]], expected: list[str]) -> None:
    value_set = _compile(_value_set({"system": SYSTEM, "filter": filters}))
    assert _codes(value_set) == expected
    for code in ("shape", "polygon", "square", "round", "circle", "rhombus"):
        assert value_set.contains(SYSTEM, code) is (code in expected), code


def test_generalizes_and_exists() -> None:
    generalizes = [{"property": "concept", "op": "generalizes", "value": "square"}]
    found = _codes(_compile(_value_set({"system": SYSTEM, "filter": generalizes})))
    assert found == ["shape", "polygon", "square", "rhombus"]
    no_sides = [{"property": "sides", "op": "exists", "value": "false"}]
    found = _codes(_compile(_value_set({"system": SYSTEM, "filter": no_sides})))
    assert found == ["shape", "polygon", "square", "round", "rhombus"]


def test_an_unimplemented_filter_cannot_tell() -> None:
    regex = [{"property": "code", "op": "regex", "value": "s.*"}]
    value_set = _compile(_value_set({"system": SYSTEM, "filter": regex}))
    assert value_set.expansion() is None
    assert value_set.contains(SYSTEM, "square") is None
    assert value_set.contains(SYSTEM, "triangle") is False  # not a code at all


def test_exclude() -> None:
    value_set = _compile(
        _value_set(
            {"system": SYSTEM, "filter": [{"property": "concept", "op": "is-a", "value": "shape"}]},
            exclude=[{"system": SYSTEM, "concept": [{"code": "round"}, {"code": "polygon"}]}],
        )
    )
    assert _codes(value_set) == ["shape", "square", "circle"]
    assert value_set.contains(SYSTEM, "round") is False
    assert value_set.contains(SYSTEM, "circle") is True


def test_imports_are_intersected_with_the_system_part_and_each_other() -> None:
    polygons = _value_set(
        {"system": SYSTEM, "filter": [{"property": "concept", "op": "is-a", "value": "polygon"}]}
    )
    listed = _value_set({"system": SYSTEM, "concept": [{"code": "square"}, {"code": "round"}]})
    imported = _compile(
        _value_set({"valueSet": ["http://example.org/polygons", "http://example.org/listed"]}),
        polygons=polygons,
        listed=listed,
    )
    assert _codes(imported) == ["square"]
    assert imported.contains(SYSTEM, "square") is True
    assert imported.contains(SYSTEM, "polygon") is False
    both = _compile(
        _value_set(
            {"valueSet": ["http://example.org/polygons"]},
            {"valueSet": ["http://example.org/listed"]},
        ),
        polygons=polygons,
        listed=listed,
    )
    assert _codes(both) == ["polygon", "square", "round"]
    assert both.contains(SYSTEM, "round") is True and both.systems() == {SYSTEM}


def test_unknown_imports_and_cycles_cannot_tell() -> None:
    unknown = _compile(_value_set({"valueSet": ["http://example.org/missing"]}))
    assert unknown.expansion() is None and unknown.contains(SYSTEM, "square") is None
    cycle = _value_set({"valueSet": ["http://example.org/cycle"]})
    looping = _compile(cycle, cycle=cycle)
    assert looping.expansion() is None and looping.contains(SYSTEM, "square") is None


def test_systems_not_held_cannot_tell_unless_listed() -> None:
    whole = _compile(_value_set({"system": OTHER}))
    assert whole.expansion() is None and whole.contains(OTHER, "x") is None
    listed = _compile(_value_set({"system": OTHER, "concept": [{"code": "x", "display": "X"}]}))
    entries = listed.expansion()
    assert entries is not None and [(e.system, e.code, e.display) for e in entries] == [
        (OTHER, "x", "X")
    ]
    assert listed.contains(OTHER, "x") is True and listed.contains(OTHER, "y") is False
    # An exclude that cannot tell makes the code unknown, never valid.
    excluded = _compile(
        _value_set(
            {"system": SYSTEM},
            exclude=[{"system": SYSTEM, "valueSet": ["http://example.org/missing"]}],
        )
    )
    assert excluded.contains(SYSTEM, "square") is None and excluded.expansion() is None


def test_a_fragment_cannot_refuse_a_code() -> None:
    source = _Source({}, content="fragment")
    whole = ValueSet(_value_set({"system": SYSTEM}), source)
    assert whole.contains(SYSTEM, "square") is True
    assert whole.contains(SYSTEM, "triangle") is None
    assert whole.expansion() is None
    filtered = ValueSet(
        _value_set(
            {
                "system": SYSTEM,
                "filter": [{"property": "concept", "op": "is-a", "value": "polygon"}],
            }
        ),
        source,
    )
    assert filtered.contains(SYSTEM, "triangle") is None and filtered.expansion() is None


def test_a_pinned_version_not_held_cannot_tell() -> None:
    pinned = _compile(_value_set({"system": SYSTEM, "version": "2"}))
    assert pinned.contains(SYSTEM, "square") is None and pinned.expansion() is None
    same = _compile(_value_set({"system": SYSTEM, "version": "1"}))
    assert same.contains(SYSTEM, "square") is True


def test_malformed_compose_cannot_tell() -> None:
    broken = _compile(_value_set({"system": SYSTEM, "filter": [{"property": "concept"}]}, "text"))
    assert broken.contains(SYSTEM, "square") is None and broken.expansion() is None
    empty = _compile({"resourceType": "ValueSet", "url": "http://example.org/empty"})
    assert empty.expansion() == () and empty.systems() == frozenset()
    assert empty.contains(SYSTEM, "square") is False
