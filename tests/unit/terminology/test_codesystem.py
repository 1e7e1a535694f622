"""A CodeSystem resource in memory: nesting, parent/child properties, case, content."""

from __future__ import annotations

from typing import Any

from terminology.codesystem import from_resource

SYSTEM = "http://example.org/fhir/CodeSystem/shapes"


def _system(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CodeSystem",
        "url": SYSTEM,
        "version": "1",
        "name": "Shapes",
        "content": "complete",
        "concept": [
            {
                "code": "shape",
                "display": "Shape",
                "concept": [
                    {
                        "code": "polygon",
                        "display": "Polygon",
                        "designation": [{"language": "fr", "value": "Polygone"}],
                        "concept": [{"code": "square", "display": "Square"}],
                    },
                    {"code": "round", "display": "Round"},
                ],
            },
            {
                "code": "circle",
                "display": "Circle",
                "property": [
                    {"code": "parent", "valueCode": "round"},
                    {"code": "sides", "valueInteger": 0},
                    {"code": "abstract", "valueBoolean": False},
                ],
            },
            {"code": "rhombus", "property": [{"code": "child", "valueCode": "square"}]},
        ],
    }
    resource.update(changes)
    return resource


def test_nesting_and_properties_make_one_hierarchy() -> None:
    system = from_resource(_system())
    assert system.ancestors("square") == {"square", "polygon", "shape", "rhombus"}
    assert system.ancestors("circle") == {"circle", "round", "shape"}
    assert system.descendants("shape") == {"shape", "polygon", "square", "round", "circle"}
    square = system.get("square")
    assert square is not None and square.parents == ["polygon", "rhombus"]
    assert system.subsumes("rhombus", "square") is True
    assert system.subsumes("square", "rhombus") is False


def test_properties_designations_and_displays() -> None:
    system = from_resource(_system())
    circle = system.get("circle")
    assert circle is not None
    assert circle.property_values("sides") == ["0"]
    assert circle.property_values("abstract") == ["false"]
    assert circle.property_values("parent") == ["round"]
    assert [(item.key, item.value) for item in circle.properties] == [
        ("valueInteger", 0),
        ("valueBoolean", False),
    ]
    polygon = system.get("polygon")
    assert polygon is not None and polygon.displays() == {"polygon", "polygone"}
    assert polygon.children == ["square"]


def test_case_sensitivity_follows_the_resource() -> None:
    assert from_resource(_system()).get("SQUARE") is None
    relaxed = from_resource(_system(caseSensitive=False))
    found = relaxed.get("SQUARE")
    assert found is not None and found.code == "square"


def test_content_says_whether_a_missing_code_is_not_a_code() -> None:
    assert from_resource(_system()).complete
    for content in ("fragment", "example", "not-present", "supplement"):
        assert not from_resource(_system(content=content)).complete


def test_a_cycle_in_a_stored_code_system_ends() -> None:
    cyclic = _system(
        concept=[
            {"code": "a", "property": [{"code": "parent", "valueCode": "b"}]},
            {"code": "b", "property": [{"code": "parent", "valueCode": "a"}]},
        ]
    )
    system = from_resource(cyclic)
    assert system.ancestors("a") == {"a", "b"} and system.descendants("a") == {"a", "b"}


def test_malformed_concepts_are_skipped() -> None:
    system = from_resource(_system(concept=[{"display": "no code"}, "text", {"code": "ok"}]))
    assert [concept.code for concept in system] == ["ok"]
