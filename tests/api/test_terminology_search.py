"""Token search modifiers the terminology answers: :in, :not-in, :below, :above."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, patient

ICD10 = "http://hl7.org/fhir/sid/icd-10"


def condition(subject: str, code: str, system: str = ICD10) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": subject},
        "code": {"coding": [{"system": system, "code": code}]},
    }


def ids(client: TestClient, query: str) -> list[str]:
    answer = client.get(f"/fhir/{query}")
    assert answer.status_code == 200, answer.text
    return sorted(entry["resource"]["id"] for entry in answer.json().get("entry", []))


def created(client: TestClient, resource: dict[str, Any]) -> str:
    answer = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    identifier: str = answer.json()["id"]
    return identifier


def test_below_and_above_follow_the_icd10_hierarchy(client: TestClient) -> None:
    subject = f"Patient/{created(client, patient())}"
    diabetes = created(client, condition(subject, "E11.9"))
    type_one = created(client, condition(subject, "E10.1"))
    cholera = created(client, condition(subject, "A00.0"))
    elsewhere = created(client, condition(subject, "E11.9", "http://example.org/local"))
    assert ids(client, f"Condition?code:below={ICD10}|E11") == [diabetes]
    assert ids(client, f"Condition?code:below={ICD10}|E10-E14") == sorted([diabetes, type_one])
    assert ids(client, f"Condition?code:below={ICD10}|IV") == sorted([diabetes, type_one])
    assert ids(client, f"Condition?code:above={ICD10}|E11.9") == [diabetes]
    assert ids(client, f"Condition?code:below={ICD10}|A00,{ICD10}|E10") == sorted(
        [cholera, type_one]
    )
    assert elsewhere not in ids(client, f"Condition?code:below={ICD10}|E11")


def test_in_and_not_in_expand_the_value_set(client: TestClient) -> None:
    female = created(client, patient(gender="female"))
    male = created(client, patient(gender="male"))
    unknown = {key: value for key, value in patient().items() if key != "gender"}
    created(client, unknown)
    gender = "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert ids(client, f"Patient?gender:in={gender}") == sorted([female, male])
    assert male not in ids(client, f"Patient?gender:not-in={gender}")
    clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    active = condition(f"Patient/{female}", "E11.9")
    active["clinicalStatus"] = {"coding": [{"system": clinical, "code": "active"}]}
    other = condition(f"Patient/{female}", "E11.9")
    other["clinicalStatus"] = {"coding": [{"system": "http://example.org/s", "code": "active"}]}
    found = created(client, active)
    created(client, other)
    statuses = "http://hl7.org/fhir/ValueSet/condition-clinical"
    assert ids(client, f"Condition?clinical-status:in={statuses}") == [found]


def test_what_the_terminology_cannot_enumerate_is_a_400(client: TestClient) -> None:
    cases = {
        "Patient?gender:in=http://example.org/ValueSet/unknown": "rofecare-2132",
        f"Condition?code:below={ICD10}|NOPE": "rofecare-2132",
        "Condition?code:below=E11": "rofecare-2134",
        f"Condition?code:in={ICD10}?fhir_vs": "rofecare-2133",  # ~12,000 codes
        "Condition?code:below=http://snomed.info/sct|73211009": "rofecare-2132",
    }
    for query, code in cases.items():
        answer = client.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
        assert answer.status_code == 400, (query, answer.text)
        codes = {c["code"] for i in answer.json()["issue"] for c in i["details"]["coding"]}
        assert code in codes, (query, answer.text)
