"""Profiles through the API: served, enforced on REST and transaction writes in each mode,
and every packaged example judged through HTTP as the unit tests judge it."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.config import Settings
from fhir_server.core import build_core
from fhir_server.services.conformance import publish_conformance
from tests.api.conftest import FHIR_JSON, make_client

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
CANONICAL = "http://rofecare.com/fhir/StructureDefinition/"
EXAMPLES = sorted(PROFILES.glob("*/examples/*.json"))
INVALID = [path for path in EXAMPLES if ".invalid." in path.name]
VALID = [path for path in EXAMPLES if path.name.endswith(".valid.json")]
RULE_CODES = ("rofecare-19",)  # the server rules: examples name resources not stored here


def keys(outcome: dict[str, Any]) -> set[str]:
    return {
        coding["code"]
        for issue in outcome.get("issue", [])
        for coding in issue.get("details", {}).get("coding", [])
    }


def expected_key(path: Path) -> str:
    return path.name.split(".invalid.", 1)[1].removesuffix(".json").replace("~", ":")


@pytest.fixture(scope="module")
def enforced(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with make_client(tmp_path_factory.mktemp("data"), profile_validation="enforce") as client:
        yield client


def test_the_profiles_are_served_and_searchable(enforced: TestClient) -> None:
    found = enforced.get("/fhir/StructureDefinition", params={"type": "Encounter"}).json()
    urls = {entry["resource"]["url"] for entry in found["entry"]}
    assert f"{CANONICAL}rofecare-encounter" in urls
    patient = enforced.get(
        "/fhir/StructureDefinition", params={"url": f"{CANONICAL}rofecare-patient"}
    ).json()
    assert patient["total"] == 1
    listed = enforced.get("/fhir/StructureDefinition", params={"_count": 200}).json()
    assert len(listed["entry"]) >= 27 + 17  # the profiles and the extension definitions
    codes = enforced.get(
        "/fhir/CodeSystem", params={"url": "http://rofecare.com/fhir/CodeSystem/staff-role"}
    ).json()
    assert codes["total"] == 1


def test_publication_adds_no_version_on_restart_and_works_without_client_ids(
    tmp_path: Path,
) -> None:
    for _ in range(2):
        with make_client(tmp_path, profile_validation="enforce", allow_client_ids=False) as c:
            read = c.get("/fhir/StructureDefinition/rofecare-patient")
            assert read.status_code == 200 and read.json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.name)
def test_every_invalid_example_is_refused_with_its_key(enforced: TestClient, path: Path) -> None:
    resource = json.loads(path.read_text())
    resource.pop("id", None)
    answer = enforced.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    key = expected_key(path)
    if answer.status_code == 201:  # the broken rule is a warning (recommendation)
        validated = enforced.post(
            f"/fhir/{resource['resourceType']}/$validate", json=resource, headers=FHIR_JSON
        )
        assert key in keys(validated.json())
        return
    assert answer.status_code == 422, answer.text
    assert key in keys(answer.json())


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.name)
def test_every_valid_example_passes_its_profiles(enforced: TestClient, path: Path) -> None:
    resource = json.loads(path.read_text())
    answer = enforced.post(
        f"/fhir/{resource['resourceType']}/$validate", json=resource, headers=FHIR_JSON
    )
    assert answer.status_code == 200
    faults = [
        issue
        for issue in answer.json()["issue"]
        if issue["severity"] == "error"
        and not any(code.startswith(RULE_CODES) for code in keys({"issue": [issue]}))
    ]
    assert faults == []


def test_a_transaction_with_one_faulty_entry_writes_nothing(enforced: TestClient) -> None:
    bad = json.loads(
        (PROFILES / "patient/examples/rofecare-patient.invalid.rof-pat-2.json").read_text()
    )
    good = json.loads((PROFILES / "patient/examples/rofecare-patient.valid.json").read_text())
    for resource in (bad, good):
        resource.pop("id", None)
    good["identifier"][0]["value"] = "TX-ONLY-1"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": good, "request": {"method": "POST", "url": "Patient"}},
            {"resource": bad, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    answer = enforced.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 422 and "rof-pat-2" in keys(answer.json())
    assert answer.json()["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    after = enforced.get("/fhir/Patient", params={"identifier": "TX-ONLY-1"}).json()
    assert after["total"] == 0


def test_warn_accepts_and_logs_keys_only_and_off_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = json.loads(
        (PROFILES / "patient/examples/rofecare-patient.invalid.rof-pat-2.json").read_text()
    )
    bad.pop("id", None)
    with make_client(tmp_path / "warn", profile_validation="warn") as client:
        with caplog.at_level(logging.WARNING, logger="rofecare.profiles"):
            assert client.post("/fhir/Patient", json=bad, headers=FHIR_JSON).status_code == 201
        logged = " ".join(record.getMessage() for record in caplog.records)
        assert "rof-pat-2" in logged
        assert bad["name"][0]["family"] not in logged  # no patient data in the log
        # A profile it claims and this server does not know breaks nothing: the client is
        # told (1805), the log is not.
        good = json.loads((PROFILES / "patient/examples/rofecare-patient.valid.json").read_text())
        good.pop("id", None)
        good["identifier"][0]["value"] = "WARN-CLAIM-1"
        good["meta"] = {"profile": ["http://example.org/StructureDefinition/nope"]}
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rofecare.profiles"):
            answer = client.post(
                "/fhir/Patient",
                json=good,
                headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"},
            )
        assert answer.status_code == 201 and "rofecare-1805" in keys(answer.json())
        assert caplog.records == []
        validated = client.post("/fhir/Patient/$validate", json=bad, headers=FHIR_JSON).json()
        assert {issue["severity"] for issue in validated["issue"]} == {"warning"}
    with make_client(tmp_path / "off", profile_validation="off") as client:
        assert client.post("/fhir/Patient", json=bad, headers=FHIR_JSON).status_code == 201
        plain = client.post("/fhir/Patient/$validate", json=bad, headers=FHIR_JSON).json()
        assert plain["issue"][0]["severity"] == "information"
        asked = client.post(
            f"/fhir/Patient/$validate?profile={CANONICAL}rofecare-patient",
            json=bad,
            headers=FHIR_JSON,
        ).json()
        assert "rof-pat-2" in keys(asked)


def test_validate_names_an_unknown_profile_and_a_declared_one_is_a_warning(
    enforced: TestClient,
) -> None:
    good = json.loads((PROFILES / "patient/examples/rofecare-patient.valid.json").read_text())
    good["identifier"][0]["value"] = "DECLARED-1"
    unknown = enforced.post(
        "/fhir/Patient/$validate?profile=http://example.org/StructureDefinition/nope",
        json=good,
        headers=FHIR_JSON,
    ).json()
    assert "rofecare-1701" in keys(unknown)
    declared = {**good, "meta": {"profile": ["http://example.org/StructureDefinition/nope"]}}
    as_outcome = {**FHIR_JSON, "Prefer": "return=OperationOutcome"}
    answer = enforced.post("/fhir/Patient", json=declared, headers=as_outcome)
    assert answer.status_code == 201, answer.text
    # accepted, and the client is told the profile it claims was not checked
    assert [issue["severity"] for issue in answer.json()["issue"]] == ["information", "warning"]
    assert "rofecare-1805" in keys(answer.json())
    wrong = {**good, "meta": {"profile": [f"{CANONICAL}rofecare-encounter"]}}
    wrong["identifier"] = [{**good["identifier"][0], "value": "DECLARED-2"}]
    refused = enforced.post("/fhir/Patient", json=wrong, headers=FHIR_JSON)
    assert refused.status_code == 422 and "rofecare-1806" in keys(refused.json())


def partner_profile(url: str, **element: Any) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": url,
        "name": "PartnerPatient",
        "status": "active",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": "constraint",
        "differential": {
            "element": [{"id": "Patient.telecom", "path": "Patient.telecom", **element}]
        },
    }


def test_a_profile_stored_on_the_server_holds_for_the_resources_declaring_it(
    enforced: TestClient,
) -> None:
    url = "http://partner.example.org/fhir/StructureDefinition/partner-patient"
    stored = enforced.post(
        "/fhir/StructureDefinition", json=partner_profile(url, min=1), headers=FHIR_JSON
    )
    assert stored.status_code == 201, stored.text
    good = json.loads((PROFILES / "patient/examples/rofecare-patient.valid.json").read_text())
    good.pop("id", None)
    good["identifier"][0]["value"] = "PARTNER-1"
    good.pop("telecom", None)
    claiming = {**good, "meta": {"profile": [url]}}
    refused = enforced.post("/fhir/Patient", json=claiming, headers=FHIR_JSON)
    assert refused.status_code == 422 and "min:Patient.telecom" in keys(refused.json())
    assert refused.json()["issue"][0]["expression"] == ["Patient.telecom"]
    accepted = enforced.post(
        "/fhir/Patient",
        json={**claiming, "telecom": [{"system": "phone", "value": "+237 6 99 00 00 00"}]},
        headers=FHIR_JSON,
    )
    assert accepted.status_code == 201, accepted.text
    validated = enforced.post(
        f"/fhir/Patient/$validate?profile={url}", json=good, headers=FHIR_JSON
    )
    assert "min:Patient.telecom" in keys(validated.json())
    # One this engine cannot enforce is stored, and a resource declaring it is told so.
    odd = "http://partner.example.org/fhir/StructureDefinition/odd-patient"
    unenforceable = partner_profile(
        odd, slicing={"discriminator": [{"type": "type", "path": "$this"}]}
    )
    assert (
        enforced.post(
            "/fhir/StructureDefinition", json=unenforceable, headers=FHIR_JSON
        ).status_code
        == 201
    )
    good["identifier"][0]["value"] = "PARTNER-2"
    told = enforced.post(
        "/fhir/Patient/$validate", json={**good, "meta": {"profile": [odd]}}, headers=FHIR_JSON
    )
    assert "rofecare-1807" in keys(told.json())
    assert {issue["severity"] for issue in told.json()["issue"]} == {"warning"}


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.name)
def test_every_invalid_example_is_refused_in_a_transaction(
    enforced: TestClient, path: Path
) -> None:
    resource = json.loads(path.read_text())
    resource.pop("id", None)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0c3a6d3e-4b7e-4d55-9a4e-2f1d6b9e8a11",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        ],
    }
    answer = enforced.post("/fhir", json=bundle, headers=FHIR_JSON)
    if answer.status_code == 200:  # a warning-only rule: the write goes through
        return
    assert answer.status_code == 422, answer.text
    assert expected_key(path) in keys(answer.json())
    assert answer.json()["issue"][0]["expression"][0].startswith("Bundle.entry[0]")


def test_the_capability_statement_names_the_profiles_in_force(enforced: TestClient) -> None:
    statement = enforced.get("/fhir/metadata").json()
    by_type = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    assert f"{CANONICAL}rofecare-patient" in by_type["Patient"]["supportedProfile"]
    assert {f"{CANONICAL}rofecare-lab-result", f"{CANONICAL}rofecare-triage"} <= set(
        by_type["Observation"]["supportedProfile"]
    )
    assert "supportedProfile" not in by_type["Group"]


async def test_workers_starting_together_publish_once_and_both_start(tmp_path: Path) -> None:
    """``serve --workers 2`` on a fresh store: both publish at once, one wins the race,
    the other reads its transaction back instead of failing its start."""
    settings = Settings(data_dir=tmp_path, profile_validation="enforce", auth_enabled=False)
    cores = [build_core(settings) for _ in range(2)]
    for core in cores:
        await core.store.open()
        await core.service.reload_search_parameters()
    try:
        written = await asyncio.gather(
            *(publish_conformance(core.service, core.conformance) for core in cores)
        )
        # each definition written once; else say which were written again, and how
        assert sum(written) == len(cores[0].conformance), await _rewritten(cores[0])
        stored = await cores[0].store.read("StructureDefinition", "rofecare-patient")
        assert stored is not None and stored.version_id == 1
    finally:
        for core in cores:
            await core.audit.stop()
            await core.store.close()


async def test_a_publication_committed_between_a_read_and_its_write_adds_no_version(
    tmp_path: Path,
) -> None:
    """The race behind the test above failing once on CI ([59, 1] written): the second
    worker read a definition as absent, the first one's whole publication committed, and
    the second one's update, reading the store again, staged a second version of the
    same content. Here the first one publishes exactly then."""
    settings = Settings(data_dir=tmp_path, profile_validation="enforce", auth_enabled=False)
    first, second = build_core(settings), build_core(settings)
    for core in (first, second):
        await core.store.open()
        await core.service.reload_search_parameters()
    update = second.service.update
    published: list[int] = []

    async def after_the_first_publishes(*args: Any, **kwargs: Any) -> Any:
        if not published:
            published.append(await publish_conformance(first.service, first.conformance))
        return await update(*args, **kwargs)

    second.service.update = after_the_first_publishes  # type: ignore[method-assign]
    try:
        assert await publish_conformance(second.service, second.conformance) == 0
        assert published == [len(first.conformance)]
        assert await _rewritten(first) == []
    finally:
        for core in (first, second):
            await core.audit.stop()
            await core.store.close()


async def _rewritten(core: Any) -> list[str]:
    """Definitions stored in more than one version, with what changed between the first
    and the current one: what a failure of the tests above names."""
    found = []
    for definition in core.conformance:
        kind, resource_id = definition["resourceType"], definition.get("id") or definition["name"]
        current = await core.store.read(kind, resource_id)
        if current is None or current.version_id == 1:
            continue
        first = await core.store.vread(kind, resource_id, 1)
        old, new = json.loads(first.body), json.loads(current.body)
        keys = sorted(k for k in {*old, *new} - {"meta"} if old.get(k) != new.get(k))
        found.append(f"{kind}/{resource_id} v{current.version_id}, changed: {keys}")
    return found
