"""The operation registry, the shared argument parser, and the $everything data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from fhir_server.definitions.registry import load_patient_compartment
from fhir_server.errors import BadRequest, NotFound
from fhir_server.search.plan import CompartmentMatch, RangeMatch
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.linked import CareDates, LinkedQuery, linked_plan
from fhir_server.services.operation_parameters import parameter_specs, parse_arguments
from fhir_server.services.operations import (
    Operation,
    OperationCall,
    OperationRegistry,
    OperationServices,
    Searchset,
)
from operations.everything_definitions import (
    CARE_DATES,
    ENCOUNTER_EVERYTHING,
    PATIENT_EVERYTHING,
)


async def _nothing(services: OperationServices, call: OperationCall) -> Searchset:
    return Searchset([], [], 0, None, [])


def _definition(**changes: Any) -> dict[str, Any]:
    definition = {**PATIENT_EVERYTHING, "url": "http://example.org/op", "code": "op"}
    definition.update(changes)
    return definition


def test_care_dates_name_a_date_parameter_of_a_compartment_type() -> None:
    registry, compartment = load_search_parameters(), load_patient_compartment()
    for resource_type, code in CARE_DATES.items():
        assert resource_type in compartment, resource_type
        parameter = registry.get(resource_type, code)
        assert parameter is not None and parameter.type == "date", (resource_type, code)


def test_definitions_parse() -> None:
    names = {spec.name: spec for spec in parameter_specs(PATIENT_EVERYTHING)}
    assert set(names) == {"start", "end", "_since", "_type", "_count"}  # 'return' is out
    assert names["_type"].max is None and names["_since"].type == "instant"
    assert {spec.name for spec in parameter_specs(ENCOUNTER_EVERYTHING)} == {
        "_since",
        "_type",
        "_count",
    }


def test_registry_finds_by_type_code_and_level() -> None:
    registry = OperationRegistry()
    registry.register(Operation(_definition(resource=["Patient", "Group"]), _nothing))
    assert registry.find("Group", "op", "instance").code == "op"
    with pytest.raises(NotFound) as unknown:
        registry.find("Observation", "op", "instance")
    assert unknown.value.rofecare_code == "rofecare-2506"
    with pytest.raises(NotFound):
        registry.find("Patient", "op", "type")  # declared at type level, not implemented
    assert [op.code for op in registry.for_type("Patient")] == ["op"]
    assert registry.for_type("Observation") == []
    with pytest.raises(ValueError, match="twice"):
        registry.register(Operation(_definition(), _nothing))


def test_bad_definitions_fail_at_start_up() -> None:
    with pytest.raises(ValueError, match="declared"):
        Operation(_definition(system=False), _nothing, levels=frozenset({"system"}))
    with pytest.raises(ValueError, match="OperationDefinition"):
        Operation(_definition(code=""), _nothing)
    odd = _definition(parameter=[{"name": "x", "use": "in", "type": "Reference"}])
    with pytest.raises(ValueError, match="Reference"):
        Operation(odd, _nothing)


def test_registry_loads_plug_in_packages() -> None:
    registry = OperationRegistry()
    registry.load(["operations"])
    assert registry.find("Patient", "everything", "instance").url.endswith("Patient-everything")
    assert registry.find("Encounter", "everything", "instance").url.endswith("Encounter-everything")


SPECS = parameter_specs(
    _definition(
        parameter=[
            {"name": "at", "use": "in", "min": 0, "max": "1", "type": "instant"},
            {"name": "day", "use": "in", "min": 0, "max": "1", "type": "dateTime"},
            {"name": "flag", "use": "in", "min": 0, "max": "1", "type": "boolean"},
            {"name": "size", "use": "in", "min": 1, "max": "1", "type": "positiveInt"},
        ]
    )
)


def test_values_arrive_typed() -> None:
    arguments = parse_arguments(
        SPECS,
        [("at", "2024-03-05T10:00:00 02:00"), ("day", "2024-03"), ("size", "7")],
        {"resourceType": "Parameters", "parameter": [{"name": "flag", "valueBoolean": True}]},
    )
    # An unencoded '+' in the offset arrives as a space.
    assert arguments.first("at") == datetime(2024, 3, 5, 10, tzinfo=timezone(timedelta(hours=2)))
    assert arguments.first("day") == (
        datetime(2024, 3, 1, tzinfo=UTC),
        datetime(2024, 4, 1, tzinfo=UTC),
    )
    assert arguments.first("flag") is True and arguments.first("size") == 7
    assert ("flag", "true") in arguments.query


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ([], "rofecare-2505"),  # size is required
        ([("size", "0")], "rofecare-2502"),  # positiveInt
        ([("size", "1"), ("flag", "yes")], "rofecare-2502"),
        ([("size", "1"), ("day", "2024-03-05T10:00")], "rofecare-2502"),  # seconds required
        ([("size", "1"), ("at", "2024-03-05T10:00:00")], "rofecare-2502"),  # zone required
    ],
)
def test_values_are_checked(query: list[tuple[str, str]], code: str) -> None:
    with pytest.raises(BadRequest) as error:
        parse_arguments(SPECS, query)
    assert error.value.rofecare_code == code


def test_care_date_window_guards_types_with_two_names_in_use() -> None:
    registry = load_search_parameters()
    links = {"Encounter": ("subject",), "MedicationRequest": ("subject",), "Coverage": ("payor",)}
    window = CareDates(CARE_DATES, datetime(2020, 1, 1, tzinfo=UTC), None)
    plan = linked_plan(LinkedQuery("Patient", "p", links, care_dates=window), registry)
    member, any_date, guard = plan.where
    every = (("Coverage", "payor"), ("Encounter", "subject"), ("MedicationRequest", "subject"))
    assert member == (CompartmentMatch(every, "Patient", "p"),)
    # Encounter 'date' or MedicationRequest 'authoredon'; Coverage has no care date.
    assert [p.param for p in any_date if isinstance(p, RangeMatch)] == ["authoredon", "date"]
    assert any_date[-1] == CompartmentMatch((("Coverage", "payor"),), "Patient", "p")
    # MedicationRequest also defines 'date' (its dosage dates): only authoredon may decide.
    others = CompartmentMatch((("Coverage", "payor"), ("Encounter", "subject")), "Patient", "p")
    assert guard[0] == others
    assert isinstance(guard[1], RangeMatch) and guard[1].param == "authoredon"
