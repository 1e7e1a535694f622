"""The terminology operations over HTTP: ``CodeSystem/$lookup``, ``$subsumes``,
``$validate-code`` and ``ValueSet/$validate-code``, ``$expand``, GET and POST forms.

One client for the module (the operations read nothing but the packaged terminology and
the ValueSets a test stores), so ICD-10 and the core content load once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, make_client

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_ALL = "http://hl7.org/fhir/sid/icd-10?fhir_vs"
DIAGNOSIS = "http://rofecare.com/fhir/ValueSet/icd-10-diagnosis"
GENDER = "http://hl7.org/fhir/administrative-gender"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
UCUM = "http://unitsofmeasure.org"
SNOMED_VS = "http://hl7.org/fhir/ValueSet/condition-code"
LOOKUP = "/fhir/CodeSystem/$lookup"
SUBSUMES = "/fhir/CodeSystem/$subsumes"
CS_VALIDATE = "/fhir/CodeSystem/$validate-code"
VS_VALIDATE = "/fhir/ValueSet/$validate-code"
EXPAND = "/fhir/ValueSet/$expand"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(Path(tmp_path_factory.mktemp("terminology"))) as test_client:
        yield test_client


def body(*parameters: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, key: value} for name, key, value in parameters],
    }


def post(client: TestClient, path: str, *parameters: tuple[str, str, Any]) -> Any:
    return client.post(path, json=body(*parameters), headers=FHIR_JSON)


def values(response: Any) -> dict[str, Any]:
    """name -> value of a Parameters answer's single-valued parameters."""
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["resourceType"] == "Parameters"
    found: dict[str, Any] = {}
    for parameter in answer["parameter"]:
        value = [v for k, v in parameter.items() if k.startswith("value")]
        if value:
            found[parameter["name"]] = value[0]
    return found


def properties(response: Any) -> list[tuple[str, Any]]:
    found = []
    for parameter in response.json()["parameter"]:
        if parameter["name"] == "property":
            parts = {part["name"]: part for part in parameter["part"]}
            value = next(v for k, v in parts["value"].items() if k.startswith("value"))
            found.append((parts["code"]["valueCode"], value))
    return found


# -- $lookup -------------------------------------------------------------------------------


def test_lookup_an_icd10_category(client: TestClient) -> None:
    response = client.get(LOOKUP, params={"system": ICD10, "code": "A00"})
    assert values(response) == {
        "name": "ICD-10 (WHO 2019)",
        "version": "2019",
        "display": "Cholera",
    }
    assert properties(response) == [
        ("parent", "A00-A09"),
        ("child", "A00.0"),
        ("child", "A00.1"),
        ("child", "A00.9"),
        ("kind", "category"),
    ]


def test_lookup_by_coding_in_a_parameters_body(client: TestClient) -> None:
    response = post(client, LOOKUP, ("coding", "valueCoding", {"system": ICD10, "code": "I"}))
    assert values(response)["display"] == "Certain infectious and parasitic diseases"
    found = properties(response)
    assert ("kind", "chapter") in found and not [p for p in found if p[0] == "parent"]
    assert ("child", "A00-A09") in found


def test_lookup_a_core_code(client: TestClient) -> None:
    response = client.get(LOOKUP, params={"system": GENDER, "code": "other"})
    assert values(response) == {
        "name": "AdministrativeGender",
        "version": "4.0.1",
        "display": "Other",
    }


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"system": ICD10, "code": "A000"}, 404, "rofecare-4704"),
        ({"system": "http://example.org/nope", "code": "x"}, 404, "rofecare-4703"),
        ({"system": ICD10, "version": "2010", "code": "A00"}, 404, "rofecare-4703"),
        ({"system": UCUM, "code": "mg"}, 404, "rofecare-4703"),
        ({"code": "A00"}, 400, "rofecare-4701"),
        ({"system": ICD10}, 400, "rofecare-4701"),
        ({"system": ICD10, "code": "A00", "coding": "x"}, 400, "rofecare-2502"),
        ({"system": "http://a\nhttp://b", "code": "A00"}, 400, "rofecare-2502"),
    ],
)
def test_lookup_errors(client: TestClient, params: dict[str, str], status: int, code: str) -> None:
    assert_outcome(client.get(LOOKUP, params=params), status, code)


def test_lookup_of_an_undotted_code_says_what_was_meant(client: TestClient) -> None:
    outcome = assert_outcome(client.get(LOOKUP, params={"system": ICD10, "code": "A000"}), 404)
    assert "did you mean 'A00.0'" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("coding", "expression"),
    [
        ({"system": ICD10}, "coding.code"),
        ({"system": ICD10, "code": 7}, "coding.code"),
        ({"system": ["x"], "code": "A00"}, "coding.system"),
        ("A00", "Parameters.parameter[0].valueCoding"),
    ],
)
def test_malformed_codings_are_400_with_their_path(
    client: TestClient, coding: Any, expression: str
) -> None:
    response = post(client, LOOKUP, ("coding", "valueCoding", coding))
    assert response.status_code == 400, response.text
    paths = [path for issue in response.json()["issue"] for path in issue.get("expression", [])]
    assert expression in paths


def test_code_and_coding_together_are_refused(client: TestClient) -> None:
    response = post(
        client,
        LOOKUP,
        ("system", "valueUri", ICD10),
        ("code", "valueCode", "A00"),
        ("coding", "valueCoding", {"system": ICD10, "code": "A01"}),
    )
    assert_outcome(response, 400, "rofecare-4701", "coding")


# -- $subsumes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "outcome"),
    [
        ("A00", "A00", "equivalent"),
        ("I", "A00.1", "subsumes"),
        ("A00-A09", "A00.1", "subsumes"),
        ("A00.1", "A00", "subsumed-by"),
        ("A00", "A01", "not-subsumed"),
        ("II", "A00", "not-subsumed"),
    ],
)
def test_subsumes_follows_the_who_hierarchy(
    client: TestClient, a: str, b: str, outcome: str
) -> None:
    response = client.get(SUBSUMES, params={"system": ICD10, "codeA": a, "codeB": b})
    assert values(response) == {"outcome": outcome}


def test_subsumes_with_codings(client: TestClient) -> None:
    response = post(
        client,
        SUBSUMES,
        ("codingA", "valueCoding", {"system": ICD10, "code": "A00.0"}),
        ("codingB", "valueCoding", {"system": ICD10, "code": "I"}),
    )
    assert values(response) == {"outcome": "subsumed-by"}


def test_subsumes_errors(client: TestClient) -> None:
    unknown = client.get(SUBSUMES, params={"system": ICD10, "codeA": "A00", "codeB": "Z999"})
    assert_outcome(unknown, 404, "rofecare-4704")
    assert_outcome(
        client.get(SUBSUMES, params={"codeA": "A00", "codeB": "A01"}), 400, "rofecare-4701"
    )
    assert_outcome(
        client.get(SUBSUMES, params={"system": ICD10, "codeA": "A00"}), 400, "rofecare-4701"
    )
    mixed = post(
        client,
        SUBSUMES,
        ("codingA", "valueCoding", {"system": ICD10, "code": "A00"}),
        ("codingB", "valueCoding", {"system": GENDER, "code": "male"}),
    )
    assert_outcome(mixed, 400, "rofecare-4701", "codingB")


# -- CodeSystem/$validate-code -------------------------------------------------------------


def test_code_system_validate_code(client: TestClient) -> None:
    valid = client.get(CS_VALIDATE, params={"url": ICD10, "code": "A00.9"})
    assert values(valid) == {"result": True, "display": "Cholera, unspecified"}
    invalid = values(client.get(CS_VALIDATE, params={"url": ICD10, "code": "A009"}))
    assert invalid["result"] is False and "did you mean 'A00.9'" in invalid["message"]
    wrong_display = client.get(
        CS_VALIDATE, params={"url": ICD10, "code": "A00.9", "display": "Plague"}
    )
    assert values(wrong_display)["result"] is False
    assert values(client.get(CS_VALIDATE, params={"url": UCUM, "code": "mmol/L"})) == {
        "result": True
    }
    assert (
        values(client.get(CS_VALIDATE, params={"url": UCUM, "code": "mmol/l/"}))["result"] is False
    )


def test_code_system_validate_code_errors(client: TestClient) -> None:
    fragment = "http://terminology.hl7.org/CodeSystem/insurance-plan-type"
    listed = client.get(CS_VALIDATE, params={"url": fragment, "code": "medical"})
    assert values(listed)["result"] is True
    unlisted = client.get(CS_VALIDATE, params={"url": fragment, "code": "not-listed"})
    assert_outcome(unlisted, 422, "rofecare-4706")
    unknown = client.get(CS_VALIDATE, params={"url": "http://example.org/nope", "code": "x"})
    assert_outcome(unknown, 404, "rofecare-4703")
    assert_outcome(client.get(CS_VALIDATE, params={"code": "A00"}), 400, "rofecare-4701", "url")
    assert_outcome(client.get(CS_VALIDATE, params={"url": ICD10}), 400, "rofecare-4701")


# -- ValueSet/$validate-code ---------------------------------------------------------------


def test_value_set_validate_code_get(client: TestClient) -> None:
    params = {"url": DIAGNOSIS, "system": ICD10, "code": "A01.0"}
    assert values(client.get(VS_VALIDATE, params=params)) == {
        "result": True,
        "display": "Typhoid fever",
    }
    chapter = values(client.get(VS_VALIDATE, params={**params, "code": "I"}))
    assert chapter["result"] is False and "message" in chapter
    no_system = client.get(VS_VALIDATE, params={"url": GENDER_VS, "code": "unknown"})
    assert values(no_system) == {"result": True, "display": "Unknown"}
    versioned = client.get(VS_VALIDATE, params={"url": GENDER_VS + "|4.0.1", "code": "male"})
    assert values(versioned)["result"] is True


def test_value_set_validate_code_display(client: TestClient) -> None:
    params = {"url": GENDER_VS, "system": GENDER, "code": "female"}
    same = client.get(VS_VALIDATE, params={**params, "display": "female"})
    assert values(same) == {"result": True, "display": "Female"}
    other = values(client.get(VS_VALIDATE, params={**params, "display": "Woman"}))
    assert other["result"] is False and other["display"] == "Female"


def test_value_set_validate_code_post_forms(client: TestClient) -> None:
    coding = post(
        client,
        VS_VALIDATE,
        ("url", "valueUri", DIAGNOSIS),
        (
            "coding",
            "valueCoding",
            {
                "system": ICD10,
                "code": "B20",
                "display": "human immunodeficiency virus [HIV] disease resulting in infectious "
                "and parasitic diseases",  # any case
            },
        ),
    )
    assert values(coding)["result"] is True
    concept = {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "86406008"},
            {"system": ICD10, "code": "B20"},
        ],
        "text": "HIV disease",
    }
    found = post(
        client,
        VS_VALIDATE,
        ("url", "valueUri", DIAGNOSIS),
        ("codeableConcept", "valueCodeableConcept", concept),
    )
    assert values(found)["result"] is True
    none = {"coding": [{"system": ICD10, "code": "B2"}, {"system": ICD10, "code": "XXIII"}]}
    refused = values(
        post(
            client,
            VS_VALIDATE,
            ("url", "valueUri", DIAGNOSIS),
            ("codeableConcept", "valueCodeableConcept", none),
        )
    )
    assert (
        refused["result"] is False and "B2" in refused["message"] and "XXIII" in refused["message"]
    )


def test_value_set_validate_code_errors(client: TestClient) -> None:
    snomed = client.get(
        VS_VALIDATE,
        params={"url": SNOMED_VS, "system": "http://snomed.info/sct", "code": "22298006"},
    )
    assert_outcome(snomed, 422, "rofecare-4706")
    unknown = client.get(VS_VALIDATE, params={"url": "http://example.org/vs", "code": "x"})
    assert_outcome(unknown, 404, "rofecare-4705")
    old = client.get(
        VS_VALIDATE, params={"url": GENDER_VS, "valueSetVersion": "3.0.2", "code": "male"}
    )
    assert_outcome(old, 404, "rofecare-4705")
    assert_outcome(client.get(VS_VALIDATE, params={"code": "male"}), 400, "rofecare-4701", "url")
    assert_outcome(client.get(VS_VALIDATE, params={"url": GENDER_VS}), 400, "rofecare-4701")
    both = post(
        client,
        VS_VALIDATE,
        ("url", "valueUri", GENDER_VS),
        ("code", "valueCode", "male"),
        ("coding", "valueCoding", {"system": GENDER, "code": "male"}),
    )
    assert_outcome(both, 400, "rofecare-4701")
    empty_concept = post(
        client,
        VS_VALIDATE,
        ("url", "valueUri", GENDER_VS),
        ("codeableConcept", "valueCodeableConcept", {"text": "x"}),
    )
    assert_outcome(empty_concept, 400, "rofecare-4702", "codeableConcept.coding")
    wrong_version = client.get(
        VS_VALIDATE,
        params={"url": DIAGNOSIS, "system": ICD10, "systemVersion": "2016", "code": "A00"},
    )
    assert_outcome(wrong_version, 404, "rofecare-4703")


# -- stored ValueSets ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(client: TestClient) -> str:
    """A hospital's own value set: intestinal infections, without cholera."""
    value_set = {
        "resourceType": "ValueSet",
        "url": "http://hospital.example/fhir/ValueSet/intestinal",
        "version": "1",
        "name": "Intestinal",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": ICD10,
                    "filter": [{"property": "concept", "op": "is-a", "value": "A00-A09"}],
                }
            ],
            "exclude": [
                {"system": ICD10, "filter": [{"property": "concept", "op": "is-a", "value": "A00"}]}
            ],
        },
    }
    response = client.post("/fhir/ValueSet", json=value_set, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    resource_id: str = response.json()["id"]
    return resource_id


def test_stored_value_set_by_instance_and_by_url(client: TestClient, stored: str) -> None:
    path = f"/fhir/ValueSet/{stored}/$validate-code"
    assert values(client.get(path, params={"system": ICD10, "code": "A01.0"}))["result"] is True
    assert values(client.get(path, params={"system": ICD10, "code": "A00.0"}))["result"] is False
    by_url = client.get(
        VS_VALIDATE,
        params={
            "url": "http://hospital.example/fhir/ValueSet/intestinal",
            "system": ICD10,
            "code": "A09.9",
        },
    )
    assert values(by_url)["result"] is True
    expansion = client.get(f"/fhir/ValueSet/{stored}/$expand", params={"filter": "typhoid"}).json()
    assert expansion["id"] == stored and expansion["name"] == "Intestinal"
    # "typhoid" is found in "Paratyphoid fever A" too: the filter matches within words.
    assert [c["code"] for c in expansion["expansion"]["contains"]] == [
        "A01",
        "A01.0",
        "A01.1",
        "A01.2",
        "A01.3",
        "A01.4",
    ]
    assert_outcome(client.get("/fhir/ValueSet/nope/$expand"), 404)


# -- $expand -------------------------------------------------------------------------------


def codes(answer: dict[str, Any]) -> list[str]:
    return [item["code"] for item in answer["expansion"].get("contains", [])]


def test_expand_a_core_value_set(client: TestClient) -> None:
    answer = client.get(EXPAND, params={"url": GENDER_VS}).json()
    assert answer["resourceType"] == "ValueSet" and answer["url"] == GENDER_VS
    assert answer["expansion"]["total"] == 4 and answer["expansion"]["offset"] == 0
    assert answer["expansion"]["timestamp"] and answer["expansion"]["identifier"].startswith(
        "urn:uuid:"
    )
    assert answer["expansion"]["contains"][0] == {
        "system": GENDER,
        "version": "4.0.1",
        "code": "male",
        "display": "Male",
    }
    assert codes(answer) == ["male", "female", "other", "unknown"]


def test_expand_filter_matches_words_of_code_and_display(client: TestClient) -> None:
    answer = client.get(EXPAND, params={"url": ICD10_ALL, "filter": "CHOL vibr"}).json()
    assert codes(answer) == ["A00.0", "A00.1"]
    assert answer["expansion"]["parameter"] == [{"name": "filter", "valueString": "CHOL vibr"}]
    by_code = client.get(EXPAND, params={"url": DIAGNOSIS, "filter": "a00"}).json()
    assert codes(by_code) == ["A00", "A00.0", "A00.1", "A00.9"]
    injection = client.get(
        EXPAND, params={"url": ICD10_ALL, "filter": "'; DROP TABLE x; --"}
    ).json()
    assert injection["expansion"]["total"] == 0 and "contains" not in injection["expansion"]


def test_expand_an_icd10_block_by_its_implicit_value_set(client: TestClient) -> None:
    answer = client.get(EXPAND, params={"url": ICD10 + "?fhir_vs=isa/A00-A09"}).json()
    assert answer["expansion"]["total"] == 71
    assert codes(answer)[:4] == ["A00-A09", "A00", "A00.0", "A00.1"]
    unknown = client.get(EXPAND, params={"url": ICD10 + "?fhir_vs=isa/NOPE"})
    assert_outcome(unknown, 404, "rofecare-4705")


def test_expand_pages_with_offset_and_count(client: TestClient) -> None:
    params = {"url": DIAGNOSIS, "filter": "tuberculosis"}
    whole = client.get(EXPAND, params=params).json()
    total = whole["expansion"]["total"]
    assert total > 50
    pages: list[str] = []
    for offset in range(0, total, 20):
        page = client.get(EXPAND, params={**params, "offset": str(offset), "count": "20"}).json()
        assert page["expansion"]["total"] == total and page["expansion"]["offset"] == offset
        assert {"name": "count", "valueInteger": 20} in page["expansion"]["parameter"]
        assert len(codes(page)) == min(20, total - offset)
        pages += codes(page)
    assert pages == codes(whole)
    past_the_end = client.get(EXPAND, params={**params, "offset": str(total), "count": "20"}).json()
    assert past_the_end["expansion"]["total"] == total and codes(past_the_end) == []


def test_expand_post(client: TestClient) -> None:
    response = post(
        client,
        EXPAND,
        ("url", "valueUri", ICD10_ALL),
        ("offset", "valueInteger", 0),
        ("count", "valueInteger", 3),
    )
    assert response.status_code == 200, response.text
    assert codes(response.json()) == ["I", "A00-A09", "A00"]
    assert response.json()["expansion"]["total"] == 12_542


def test_expand_refuses_what_is_too_big_or_not_enumerable(client: TestClient) -> None:
    too_big = assert_outcome(client.get(EXPAND, params={"url": ICD10_ALL}), 400, "rofecare-4707")
    assert too_big["issue"][0]["code"] == "too-costly"
    capped = client.get(EXPAND, params={"url": ICD10_ALL, "count": "50000", "offset": "12000"})
    assert len(codes(capped.json())) == 542
    assert_outcome(client.get(EXPAND, params={"url": SNOMED_VS}), 422, "rofecare-4708")
    assert_outcome(
        client.get(EXPAND, params={"url": UCUM + "?fhir_vs", "count": "10"}), 422, "rofecare-4708"
    )


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"url": GENDER_VS, "filter": "x" * 201}, 400, "rofecare-4709"),
        ({"url": GENDER_VS, "filter": " ".join("abcdefghijk")}, 400, "rofecare-4709"),
        ({"url": GENDER_VS, "offset": "-1"}, 400, "rofecare-4710"),
        ({"url": GENDER_VS, "count": "-5"}, 400, "rofecare-4710"),
        ({"url": GENDER_VS, "count": "ten"}, 400, "rofecare-2502"),
        ({"url": "http://example.org/vs"}, 404, "rofecare-4705"),
        ({}, 400, "rofecare-4701"),
        ({"url": GENDER_VS, "filter": "x" * 5000}, 400, "rofecare-2507"),
    ],
)
def test_expand_errors(client: TestClient, params: dict[str, str], status: int, code: str) -> None:
    assert_outcome(client.get(EXPAND, params=params), status, code)


def test_unsupported_parameters_are_ignored_or_refused_when_strict(client: TestClient) -> None:
    lenient = client.get(EXPAND, params={"url": GENDER_VS, "activeOnly": "true"})
    assert codes(lenient.json()) == ["male", "female", "other", "unknown"]
    strict = client.get(
        EXPAND,
        params={"url": GENDER_VS, "activeOnly": "true"},
        headers={"Prefer": "handling=strict"},
    )
    assert_outcome(strict, 400, "rofecare-2504")


def test_the_capability_statement_lists_the_operations(client: TestClient) -> None:
    resources = client.get("/fhir/metadata").json()["rest"][0]["resource"]
    declared = {
        entry["type"]: {op["name"]: op["definition"] for op in entry.get("operation", [])}
        for entry in resources
    }
    assert {
        "lookup": "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
        "subsumes": "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes",
        "validate-code": "http://hl7.org/fhir/OperationDefinition/CodeSystem-validate-code",
    }.items() <= declared["CodeSystem"].items()
    assert {"expand", "validate-code"} <= set(declared["ValueSet"])
