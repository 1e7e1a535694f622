"""Rewriting a Bundle entry's references to the entries' new ids (services/references.py),
and the FHIRPath of a placeholder that names no entry."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.errors import BadRequest
from fhir_server.services.references import rewrite_references

TARGETS = {"urn:uuid:p": "Patient/1", "urn:oid:1.2.3": "Practitioner/2"}


def unresolvable(reference: str) -> str:
    raise AssertionError(f"no conditional reference expected, got {reference}")


def observation(deep_reference: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:p"},
        "performer": [{"reference": "Practitioner/kept"}, {"reference": "urn:oid:1.2.3"}],
        "contained": [
            {
                "resourceType": "Provenance",
                "extension": [
                    {"url": "http://example.org/a", "valueString": "urn:uuid:p"},
                    {
                        "url": "http://example.org/b",
                        "valueReference": {"reference": deep_reference},
                    },
                ],
            }
        ],
        "note": [{"text": "urn:uuid:unknown is only text"}],
    }


def test_every_reference_at_any_depth_is_rewritten() -> None:
    rewritten = rewrite_references(
        observation("urn:oid:1.2.3"), TARGETS, unresolvable, "Bundle.entry[3].resource"
    )

    assert rewritten["subject"] == {"reference": "Patient/1"}
    assert rewritten["performer"] == [
        {"reference": "Practitioner/kept"},
        {"reference": "Practitioner/2"},
    ]
    extensions = rewritten["contained"][0]["extension"]
    assert extensions[0]["valueString"] == "Patient/1"  # a uri-like string naming an entry
    assert extensions[1]["valueReference"] == {"reference": "Practitioner/2"}
    assert rewritten["note"] == [{"text": "urn:uuid:unknown is only text"}]


def test_the_input_is_not_changed() -> None:
    original = observation("urn:oid:1.2.3")
    rewrite_references(original, TARGETS, unresolvable, "Bundle.entry[0].resource")
    assert original == observation("urn:oid:1.2.3")


def test_a_placeholder_naming_no_entry_is_a_400_at_its_path() -> None:
    with pytest.raises(BadRequest) as refused:
        rewrite_references(
            observation("urn:uuid:nobody"), TARGETS, unresolvable, "Bundle.entry[3].resource"
        )

    issue = refused.value.issues[0]
    assert issue.rofecare_code == "rofecare-2405"
    assert issue.expression == (
        "Bundle.entry[3].resource.contained[0].extension[1].valueReference.reference",
    )
    assert "urn:uuid:nobody" in issue.diagnostics


def test_conditional_references_are_resolved_by_the_caller() -> None:
    asked: list[str] = []

    def resolve(reference: str) -> str:
        asked.append(reference)
        return "Organization/9"

    rewritten = rewrite_references(
        {"managingOrganization": {"reference": "Organization?identifier=x|1"}},
        TARGETS,
        resolve,
        "Bundle.entry[0].resource",
    )

    assert rewritten == {"managingOrganization": {"reference": "Organization/9"}}
    assert asked == ["Organization?identifier=x|1"]
