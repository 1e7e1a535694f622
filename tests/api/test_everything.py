"""``Patient/[id]/$everything`` and ``Encounter/[id]/$everything`` over HTTP.

One small hospital record: patient A with two encounters, observations, a medication
request, a condition and a coverage, referencing a practitioner, an organization, a location,
a medication and devices; patient B with its own data, some of it referenced from A's. Each
test asserts the exact sets of ids returned, as matches and as includes.

Device is in no R4 patient compartment (the CompartmentDefinition lists DeviceRequest and
DeviceUseStatement, not Device), so a device is context wherever it is referenced, even one
whose ``patient`` is B; B's Observation is in B's compartment and never in A's answer.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FHIR_JSON, assert_outcome, make_client, observation, patient

Key = tuple[str, str]


def ref(key: str) -> dict[str, str]:
    return {"reference": key}


RECORD: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "org1", "name": "Rofecare General"},
    {"resourceType": "Practitioner", "id": "pr1"},
    {"resourceType": "Practitioner", "id": "pr2"},  # referenced by nobody in A's record
    {"resourceType": "Practitioner", "id": "pr3"},  # referenced only by B's data
    {"resourceType": "Location", "id": "loc1", "name": "Ward 1"},
    {"resourceType": "Medication", "id": "med1"},
    {"resourceType": "Device", "id": "dev0"},  # nobody's device
    patient(id="pa", managingOrganization=ref("Organization/org1"),
            generalPractitioner=[ref("Practitioner/pr1")]),
    patient(id="pb", identifier=[]),
    {"resourceType": "Device", "id": "devb", "patient": ref("Patient/pb")},
    {
        "resourceType": "Encounter", "id": "ea1", "status": "finished", "class": {"code": "AMB"},
        "subject": ref("Patient/pa"),
        "participant": [{"individual": ref("Practitioner/pr1")}],
        "serviceProvider": ref("Organization/org1"),
        "location": [{"location": ref("Location/loc1")}],
        "period": {"start": "2020-03-01T09:00:00Z", "end": "2020-03-01T10:00:00Z"},
    },
    {
        "resourceType": "Encounter", "id": "ea2", "status": "finished", "class": {"code": "AMB"},
        "subject": ref("Patient/pa"),
        "period": {"start": "2022-05-01T09:00:00Z", "end": "2022-05-01T10:00:00Z"},
    },
    observation("Patient/pa", id="oa1", encounter=ref("Encounter/ea1"),
                performer=[ref("Practitioner/pr1")], device=ref("Device/dev0"),
                effectiveDateTime="2020-03-01T09:30:00Z"),
    # It points at B's observation (B's record, never carried in A's) and at a device
    # assigned to B (a device, in no patient compartment: carried as context).
    observation("Patient/pa", id="oa2", encounter=ref("Encounter/ea2"),
                device=ref("Device/devb"), hasMember=[ref("Observation/ob")],
                effectiveDateTime="2022-05-01T09:30:00Z"),
    {
        "resourceType": "MedicationRequest", "id": "mra", "status": "active", "intent": "order",
        "subject": ref("Patient/pa"), "encounter": ref("Encounter/ea2"),
        "medicationReference": ref("Medication/med1"), "authoredOn": "2022-05-01",
        # Its dosage dates (the R4 'date' parameter of MedicationRequest) are in 2020: a
        # care-date window must look at authoredOn only.
        "dosageInstruction": [{"timing": {"event": ["2020-03-01"]}}],
    },
    {
        "resourceType": "Condition", "id": "ca", "subject": ref("Patient/pa"),
        "encounter": ref("Encounter/ea2"), "onsetDateTime": "2022-04-01",
        "recordedDate": "2020-03-01",
    },
    {
        "resourceType": "Coverage", "id": "cova", "status": "active",
        "beneficiary": ref("Patient/pa"), "payor": [ref("Organization/org1")],
    },
    {
        "resourceType": "Encounter", "id": "eb", "status": "finished", "class": {"code": "AMB"},
        "subject": ref("Patient/pb"), "participant": [{"individual": ref("Practitioner/pr3")}],
    },
    observation("Patient/pb", id="ob", encounter=ref("Encounter/eb")),
]  # fmt: skip

A_MATCHES = {
    ("Patient", "pa"), ("Encounter", "ea1"), ("Encounter", "ea2"), ("Observation", "oa1"),
    ("Observation", "oa2"), ("MedicationRequest", "mra"), ("Condition", "ca"),
    ("Coverage", "cova"),
}  # fmt: skip
A_INCLUDES = {
    ("Organization", "org1"), ("Practitioner", "pr1"), ("Location", "loc1"),
    ("Medication", "med1"), ("Device", "dev0"), ("Device", "devb"),
}  # fmt: skip


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    url = f"/fhir/{resource['resourceType']}/{resource['id']}"
    response = client.put(url, json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def record(client: TestClient) -> TestClient:
    for resource in RECORD:
        put(client, resource)
    return client


def keys(bundle: dict[str, Any], mode: str) -> list[Key]:
    """The (type, id) of the entries of this search mode ("" for every entry)."""
    return [
        (entry["resource"]["resourceType"], entry["resource"].get("id", ""))
        for entry in bundle.get("entry", [])
        if mode in ("", entry["search"]["mode"])
    ]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((item["url"] for item in bundle["link"] if item["relation"] == relation), None)


def get(client: TestClient, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if entry["search"]["mode"] != "outcome":
            expected = f"http://testserver/fhir/{resource['resourceType']}/{resource['id']}"
            assert entry["fullUrl"] == expected
    return bundle


def pages(client: TestClient, url: str, between: Any = None) -> list[dict[str, Any]]:
    """Every page, following ``next`` links; ``between(n)`` runs after page n."""
    found = [get(client, url)]
    while (next_url := link(found[-1], "next")) is not None:
        assert len(found) < 50, "paging does not end"
        if between is not None:
            between(len(found))
        found.append(get(client, next_url))
    return found


def query(url: str | None) -> dict[str, list[str]]:
    assert url is not None
    return parse_qs(urlsplit(url).query)


# -- what is returned -----------------------------------------------------------------------


def test_patient_everything_is_the_record_and_what_it_references(record: TestClient) -> None:
    bundle = get(record, "/fhir/Patient/pa/$everything")
    matches, includes = keys(bundle, "match"), keys(bundle, "include")
    assert matches[0] == ("Patient", "pa")  # the focal resource first
    assert set(matches) == A_MATCHES and len(matches) == len(A_MATCHES)
    assert set(includes) == A_INCLUDES and len(includes) == len(A_INCLUDES)
    assert bundle["total"] == len(A_MATCHES)
    assert link(bundle, "next") is None
    assert link(bundle, "self") == "http://testserver/fhir/Patient/pa/$everything?_count=50"


def test_another_patients_data_is_never_included(record: TestClient) -> None:
    bundle = get(record, "/fhir/Patient/pb/$everything")
    assert set(keys(bundle, "match")) == {
        ("Patient", "pb"), ("Encounter", "eb"), ("Observation", "ob"),
    }  # fmt: skip
    assert set(keys(bundle, "include")) == {("Practitioner", "pr3")}
    assert ("Observation", "ob") not in set(keys(get(record, "/fhir/Patient/pa/$everything"), ""))


def test_type_filters_every_resource_returned(record: TestClient) -> None:
    bundle = get(record, "/fhir/Patient/pa/$everything?_type=Observation,Practitioner")
    assert set(keys(bundle, "match")) == {("Observation", "oa1"), ("Observation", "oa2")}
    assert keys(bundle, "include") == [("Practitioner", "pr1")]
    assert bundle["total"] == 2
    repeated = get(record, "/fhir/Patient/pa/$everything?_type=Encounter&_type=Patient")
    assert set(keys(repeated, "match")) == {
        ("Patient", "pa"), ("Encounter", "ea1"), ("Encounter", "ea2"),
    }  # fmt: skip
    assert keys(repeated, "include") == []
    nothing_linked = get(record, "/fhir/Patient/pa/$everything?_type=Practitioner")
    assert nothing_linked.get("entry") is None and nothing_linked["total"] == 0


def test_since_keeps_what_changed(record: TestClient) -> None:
    time.sleep(0.01)  # meta.lastUpdated has millisecond precision
    changed = put(record, {**RECORD_BY_ID["oa2"], "status": "amended"})
    since = changed["meta"]["lastUpdated"]
    put(record, observation("Patient/pa", id="oa3", performer=[ref("Practitioner/pr1")]))
    put(record, {"resourceType": "Practitioner", "id": "pr1", "active": True})
    bundle = get(record, f"/fhir/Patient/pa/$everything?_since={since}")
    assert set(keys(bundle, "match")) == {("Observation", "oa2"), ("Observation", "oa3")}
    # pr1 changed too; org1, devb and the patient did not.
    assert keys(bundle, "include") == [("Practitioner", "pr1")]
    assert bundle["total"] == 2
    assert query(link(bundle, "self"))["_since"] == [since]


def test_start_and_end_filter_on_care_dates(record: TestClient) -> None:
    undated = {("Patient", "pa"), ("Coverage", "cova")}  # no care date: never date-filtered
    recent = get(record, "/fhir/Patient/pa/$everything?start=2022-01-01")
    assert set(keys(recent, "match")) == undated | {
        ("Encounter", "ea2"), ("Observation", "oa2"), ("MedicationRequest", "mra"),
        ("Condition", "ca"),
    }  # fmt: skip
    # The patient's own references, and what the 2022 resources reference.
    assert set(keys(recent, "include")) == {
        ("Organization", "org1"), ("Practitioner", "pr1"), ("Medication", "med1"),
        ("Device", "devb"),
    }  # fmt: skip
    early = get(record, "/fhir/Patient/pa/$everything?end=2020")
    # mra's dosage date is in 2020 but it was authored in 2022; ca was recorded in 2020 but
    # began in 2022: neither is care of 2020.
    assert set(keys(early, "match")) == undated | {("Encounter", "ea1"), ("Observation", "oa1")}
    assert set(keys(early, "include")) == {
        ("Organization", "org1"), ("Practitioner", "pr1"), ("Location", "loc1"),
        ("Device", "dev0"),
    }  # fmt: skip
    window = get(record, "/fhir/Patient/pa/$everything?start=2021&end=2021-12-31")
    assert set(keys(window, "match")) == undated
    assert (
        get(record, "/fhir/Patient/pa/$everything?start=2020-03-01&end=2020-03-01")["total"]
        == len(undated) + 2
    )


# -- paging ---------------------------------------------------------------------------------


def test_pages_of_two_return_each_match_once(record: TestClient) -> None:
    found = pages(record, "/fhir/Patient/pa/$everything?_count=2")
    assert len(found) == 4
    matches = [key for page in found for key in keys(page, "match")]
    assert matches[0] == ("Patient", "pa")
    assert len(matches) == len(set(matches)) and set(matches) == A_MATCHES
    includes = {key for page in found for key in keys(page, "include")}
    assert includes == A_INCLUDES
    for page in found:
        assert len(keys(page, "match")) <= 2
        own = keys(page, "match") + keys(page, "include")
        assert len(own) == len(set(own))  # each resource once per page
        assert page["total"] == len(A_MATCHES)
        assert query(link(page, "self"))["_count"] == ["2"]
    assert all(query(link(page, "next"))["_count"] == ["2"] for page in found[:-1])


def test_paging_holds_while_data_changes(record: TestClient) -> None:
    def change(page_number: int) -> None:
        if page_number == 1:
            put(record, observation("Patient/pa", id="oa-new"))
            put(record, {**RECORD_BY_ID["ea1"], "status": "cancelled"})  # served already
            assert record.delete("/fhir/Coverage/cova").status_code == 200

    found = pages(record, "/fhir/Patient/pa/$everything?_count=2", between=change)
    matches = [key for page in found for key in keys(page, "match")]
    expected = (A_MATCHES - {("Coverage", "cova")}) | {("Observation", "oa-new")}
    assert len(matches) == len(set(matches))
    served_first = set(keys(found[0], "match"))
    assert set(matches) - served_first == expected - served_first


def test_filters_survive_into_next_links(record: TestClient) -> None:
    since = "2000-01-01T00:00:00Z"
    found = pages(record, f"/fhir/Patient/pa/$everything?_type=Observation,Encounter&_count=1"
                          f"&_since={since}&start=2019&_format=json")  # fmt: skip
    assert [key for page in found for key in keys(page, "match")] == [
        ("Encounter", "ea1"), ("Encounter", "ea2"), ("Observation", "oa1"), ("Observation", "oa2"),
    ]  # fmt: skip
    for page in found[:-1]:
        parameters = query(link(page, "next"))
        assert parameters["_type"] == ["Observation,Encounter"] and parameters["_count"] == ["1"]
        assert parameters["_since"] == [since] and parameters["start"] == ["2019"]
        assert parameters["_format"] == ["json"] and "_cursor" in parameters


def test_count_is_capped_and_zero_counts_only(tmp_path: Any) -> None:
    with make_client(tmp_path, max_page_size=3) as client:
        for resource in RECORD:
            put(client, resource)
        found = pages(client, "/fhir/Patient/pa/$everything?_count=1000")
        assert [len(keys(page, "match")) for page in found] == [3, 3, 2]
        assert query(link(found[0], "next"))["_count"] == ["3"]
        counted = get(client, "/fhir/Patient/pa/$everything?_count=0")
        assert counted["total"] == len(A_MATCHES) and "entry" not in counted
        assert link(counted, "next") is None


def test_count_one_pages_from_the_patient_alone(record: TestClient) -> None:
    found = pages(record, "/fhir/Patient/pa/$everything?_count=1")
    assert keys(found[0], "match") == [("Patient", "pa")]
    assert set(keys(found[0], "include")) == {("Organization", "org1"), ("Practitioner", "pr1")}
    matches = [key for page in found for key in keys(page, "match")]
    assert len(found) == len(A_MATCHES) and set(matches) == A_MATCHES


# -- Encounter ------------------------------------------------------------------------------


def test_encounter_everything(record: TestClient) -> None:
    first = get(record, "/fhir/Encounter/ea1/$everything")
    assert keys(first, "match") == [("Encounter", "ea1"), ("Observation", "oa1")]
    assert set(keys(first, "include")) == {
        ("Patient", "pa"), ("Practitioner", "pr1"), ("Organization", "org1"),
        ("Location", "loc1"), ("Device", "dev0"),
    }  # fmt: skip
    assert first["total"] == 2
    second = get(record, "/fhir/Encounter/ea2/$everything")
    assert keys(second, "match")[0] == ("Encounter", "ea2")
    assert set(keys(second, "match")) == {
        ("Encounter", "ea2"), ("Observation", "oa2"), ("MedicationRequest", "mra"),
        ("Condition", "ca"),
    }  # fmt: skip
    # oa2 also references ob, in patient B's compartment: not part of A's encounter.
    assert set(keys(second, "include")) == {
        ("Patient", "pa"), ("Medication", "med1"), ("Device", "devb"),
    }  # fmt: skip
    paged = pages(record, "/fhir/Encounter/ea2/$everything?_count=1")
    every = [key for page in paged for key in keys(page, "")]
    assert every.count(("Encounter", "ea2")) == 1  # first, never again as an include
    assert {key for page in paged for key in keys(page, "match")} == set(keys(second, "match"))
    typed = get(record, "/fhir/Encounter/ea2/$everything?_type=Condition,Patient&_count=1")
    assert keys(typed, "match") == [("Condition", "ca")]
    assert keys(typed, "include") == [("Patient", "pa")]
    assert link(typed, "next") is None


def test_encounter_everything_rejects_patient_only_parameters_leniently(
    record: TestClient,
) -> None:
    bundle = get(record, "/fhir/Encounter/ea1/$everything?start=2020")
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert outcome["resource"]["issue"][0]["details"]["coding"][0]["code"] == "rofecare-2504"
    strict = record.get(
        "/fhir/Encounter/ea1/$everything?start=2020", headers={"Prefer": "handling=strict"}
    )
    assert_outcome(strict, 400, "rofecare-2504", "start")


# -- POST -----------------------------------------------------------------------------------


def test_post_with_parameters(record: TestClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueCode": "Observation"},
            {"name": "_type", "valueCode": "Encounter"},
            {"name": "_count", "valueInteger": 3},
            {"name": "start", "valueDate": "2019"},
        ],
    }
    response = record.post("/fhir/Patient/pa/$everything", json=body, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    first = response.json()
    assert len(keys(first, "match")) == 3
    next_url = link(first, "next")
    assert query(next_url) | {"_cursor": []} == {
        "_type": ["Observation", "Encounter"], "_count": ["3"], "start": ["2019"], "_cursor": [],
    }  # fmt: skip
    assert next_url is not None
    rest = pages(record, next_url)
    matches = keys(first, "match") + [key for page in rest for key in keys(page, "match")]
    assert set(matches) == {
        ("Encounter", "ea1"), ("Encounter", "ea2"), ("Observation", "oa1"), ("Observation", "oa2"),
    }  # fmt: skip
    empty = record.post("/fhir/Patient/pa/$everything", content=b"", headers=FHIR_JSON)
    assert empty.status_code == 200 and set(keys(empty.json(), "match")) == A_MATCHES
    plain = record.post("/fhir/Encounter/ea1/$everything", json={"resourceType": "Parameters"})
    assert plain.status_code == 200 and plain.json()["total"] == 2


# -- errors ---------------------------------------------------------------------------------


def test_unknown_and_deleted_focal_resources(record: TestClient) -> None:
    assert_outcome(record.get("/fhir/Patient/nobody/$everything"), 404, "rofecare-1102")
    assert_outcome(record.get("/fhir/Encounter/nothing/$everything"), 404, "rofecare-1102")
    assert record.delete("/fhir/Patient/pb").status_code == 200
    assert_outcome(record.get("/fhir/Patient/pb/$everything"), 410, "rofecare-1103")
    posted = record.post("/fhir/Patient/pb/$everything", json={"resourceType": "Parameters"})
    assert_outcome(posted, 410, "rofecare-1103")
    assert_outcome(record.get("/fhir/Patient/x;DROP TABLE x/$everything"), 400, "rofecare-1105")
    assert_outcome(record.get("/fhir/Observation/oa1/$everything"), 404, "rofecare-2506")
    assert_outcome(record.get("/fhir/Patient/pa/$nothing"), 404, "rofecare-2506")
    assert_outcome(record.get("/fhir/Patient/$everything"), 404, "rofecare-2506")
    assert_outcome(record.get("/fhir/Nonsense/pa/$everything"), 404, "rofecare-1101")


@pytest.mark.parametrize(
    ("query_string", "code", "expression"),
    [
        ("_since=yesterday", "rofecare-2502", "_since"),
        ("_since=2024-01-01", "rofecare-2502", "_since"),  # a date, not an instant
        ("_since=2024-01-01T00:00:00Z' OR '1'='1", "rofecare-2502", "_since"),
        ("_since=2024-01-01T00:00:00Z&_since=2024-01-02T00:00:00Z", "rofecare-2503", "_since"),
        ("_count=abc", "rofecare-2502", "_count"),
        ("_count=2.5", "rofecare-2502", "_count"),
        ("_count=-1", "rofecare-2502", "_count"),
        ("_count=99999999999999999999", "rofecare-2502", "_count"),
        ("_count=1&_count=2", "rofecare-2503", "_count"),
        ("_type=Nonsense", "rofecare-2115", None),
        ("_type=Observation' OR 1=1--", "rofecare-2115", None),
        ("_type=Parameters", "rofecare-2115", None),
        ("start=2024-02-30", "rofecare-2502", "start"),
        ("end=2024-01-01T10:00:00Z", "rofecare-2502", "end"),  # a dateTime, not a date
        ("start=2024-02&end=2024-01", "rofecare-2508", "start"),
        ("_cursor=not-a-cursor", "rofecare-1604", None),
        ("_cursor=' OR 1=1 --", "rofecare-1604", None),
        ("_since=" + "9" * 5000, "rofecare-2507", "_since"),
    ],
)
def test_bad_parameters_are_400(
    record: TestClient, query_string: str, code: str, expression: str | None
) -> None:
    response = record.get(f"/fhir/Patient/pa/$everything?{query_string}")
    assert_outcome(response, 400, code, expression)


@pytest.mark.parametrize(
    ("body", "code", "expression"),
    [
        ({"resourceType": "Patient"}, "rofecare-2501", "Parameters"),
        ([1, 2], "rofecare-2501", "Parameters"),
        ({"resourceType": "Parameters", "parameter": {}}, "rofecare-2501", "Parameters.parameter"),
        ({"resourceType": "Parameters", "parameter": [{"valueInteger": 1}]}, "rofecare-2501",
         "Parameters.parameter[0]"),
        ({"resourceType": "Parameters", "parameter": ["_count"]}, "rofecare-2501",
         "Parameters.parameter[0]"),
        ({"resourceType": "Parameters", "parameter": [{"name": "_count"}]}, "rofecare-2501",
         "Parameters.parameter[0]"),
        ({"resourceType": "Parameters",
          "parameter": [{"name": "_count", "valueInteger": 1, "valueString": "1"}]},
         "rofecare-2501", "Parameters.parameter[0]"),
        ({"resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": "5"}]},
         "rofecare-2502", "Parameters.parameter[0].valueInteger"),
        ({"resourceType": "Parameters", "parameter": [{"name": "_count", "valueDecimal": 1.5}]},
         "rofecare-2502", "Parameters.parameter[0].valueDecimal"),
        ({"resourceType": "Parameters", "parameter": [{"name": "_count", "valueString": "x"}]},
         "rofecare-2502", "Parameters.parameter[0].valueString"),
        ({"resourceType": "Parameters", "parameter": [{"name": "_since", "valueInteger": 5}]},
         "rofecare-2502", "Parameters.parameter[0].valueInteger"),
        ({"resourceType": "Parameters",
          "parameter": [{"name": "_since", "valueInstant": "2024-13-01T00:00:00Z"}]},
         "rofecare-2502", "Parameters.parameter[0].valueInstant"),
        ({"resourceType": "Parameters",
          "parameter": [{"name": "_type", "resource": {"resourceType": "Patient"}}]},
         "rofecare-2501", "Parameters.parameter[0]"),
        ({"resourceType": "Parameters",
          "parameter": [{"name": "_type", "valueCode": "Observation; DROP TABLE x"}]},
         "rofecare-2115", None),
        ({"resourceType": "Parameters",
          "parameter": [{"name": "x", "valueString": "y"}] * 101}, "rofecare-2507", None),
    ],
)  # fmt: skip
def test_malformed_parameters_bodies_are_400(
    record: TestClient, body: Any, code: str, expression: str | None
) -> None:
    response = record.post("/fhir/Patient/pa/$everything", json=body, headers=FHIR_JSON)
    assert_outcome(response, 400, code, expression)


def test_bodies_that_are_not_fhir_json(record: TestClient) -> None:
    not_json = record.post("/fhir/Patient/pa/$everything", content=b"{", headers=FHIR_JSON)
    assert_outcome(not_json, 400, "rofecare-1506")
    form = record.post(
        "/fhir/Patient/pa/$everything",
        content=b"_count=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_outcome(form, 415, "rofecare-1503")


def test_unknown_parameters_are_reported_or_refused(record: TestClient) -> None:
    bundle = get(record, "/fhir/Patient/pa/$everything?foo=bar&_count=100")
    assert set(keys(bundle, "match")) == A_MATCHES
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert outcome["resource"]["issue"][0]["expression"] == ["foo"]
    assert "foo" not in query(link(bundle, "self"))
    strict = record.get(
        "/fhir/Patient/pa/$everything?foo=bar", headers={"Prefer": "handling=strict"}
    )
    assert_outcome(strict, 400, "rofecare-2504", "foo")
    body = {"resourceType": "Parameters", "parameter": [{"name": "foo", "valueString": "bar"}]}
    posted = record.post("/fhir/Patient/pa/$everything", json=body, headers=FHIR_JSON)
    assert posted.status_code == 200
    assert posted.json()["entry"][-1]["resource"]["issue"][0]["expression"] == [
        "Parameters.parameter[0]"
    ]


# -- declaration ----------------------------------------------------------------------------


def test_capability_statement_declares_everything(client: TestClient) -> None:
    resources = {r["type"]: r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]}
    base = "http://hl7.org/fhir/OperationDefinition/"
    assert {"name": "everything", "definition": base + "Patient-everything"} in resources[
        "Patient"
    ]["operation"]
    assert {"name": "everything", "definition": base + "Encounter-everything"} in resources[
        "Encounter"
    ]["operation"]
    assert [op["name"] for op in resources["Observation"]["operation"]] == ["validate"]


RECORD_BY_ID = {resource["id"]: resource for resource in RECORD}
