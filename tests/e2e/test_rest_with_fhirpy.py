"""The FHIR REST interactions, driven by fhirpy the way a newcomer would use it.

Where fhirpy has no API for something (request headers such as If-Match or If-None-Exist,
JSON Patch's media type), plain ``requests`` calls stand in.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound
from fhirpy.lib import SyncFHIRResource

from tests.e2e.fhir import (
    FHIR_JSON,
    IDENTIFIER_SYSTEM,
    JSON_PATCH,
    Json,
    assert_operation_outcome,
    entry_key,
    follow_pages,
    observation,
    patient,
)

pytestmark = pytest.mark.e2e

RESOURCE_TYPES = ["Patient", "Observation"]


# -- helpers ---------------------------------------------------------------------------------


def to_resource(client: SyncFHIRClient, body: Json) -> SyncFHIRResource:
    fields = {k: v for k, v in body.items() if k != "resourceType"}
    return client.resource(body["resourceType"], **fields)


def new_body(client: SyncFHIRClient, resource_type: str) -> Json:
    if resource_type == "Patient":
        return patient()
    subject = to_resource(client, patient())
    subject.save()
    return observation(subject.id)


def change(resource: SyncFHIRResource) -> None:
    """An ordinary edit a client would make before saving (an update)."""
    if resource.resource_type == "Patient":
        resource["telecom"] = [{"system": "phone", "value": f"+44 20 7946 {len(str(resource))}"}]
    else:
        resource["valueQuantity"]["value"] = round(resource["valueQuantity"]["value"] + 0.4, 1)


def patch_operations(resource_type: str) -> list[Json]:
    if resource_type == "Patient":
        return [{"op": "replace", "path": "/name/0/given/0", "value": "Augusta"}]
    return [
        {"op": "test", "path": "/status", "value": "final"},
        {"op": "replace", "path": "/status", "value": "amended"},
    ]


def patched_value(resource: Any) -> str:
    if resource["resourceType"] == "Patient":
        value: str = resource["name"][0]["given"][0]
        return value
    status: str = resource["status"]
    return status


def json_patch_client(base: str) -> SyncFHIRClient:
    """fhirpy sends PATCH bodies as application/json; FHIR's JSON Patch needs its own type."""
    return SyncFHIRClient(
        base, extra_headers={"Content-Type": JSON_PATCH}, requests_config={"timeout": 10}
    )


def without_meta(resource: Any) -> Json:
    return {k: v for k, v in dict(resource).items() if k != "meta"}


def plain(resource: Any) -> Json:
    """A fhirpy resource or AttrDict as the plain JSON the server sent."""
    return resource.serialize() if isinstance(resource, SyncFHIRResource) else dict(resource)


def fhirpy_fetch(client: SyncFHIRClient) -> Callable[[str], Json]:
    def fetch(url: str) -> Json:
        bundle: Json = client.execute(url, method="get")
        return bundle

    return fetch


def make_versions(client: SyncFHIRClient, fhir_base: str, resource_type: str) -> SyncFHIRResource:
    """A resource with five versions: POST, PUT, PUT, PATCH, DELETE."""
    resource = to_resource(client, new_body(client, resource_type))
    resource.save()
    for _ in range(2):
        change(resource)
        resource.save()
    json_patch_client(fhir_base).execute(
        f"{resource_type}/{resource.id}", method="patch", data=patch_operations(resource_type)
    )
    resource.delete()
    return resource


# -- create, read, update, patch, vread, delete ---------------------------------------------


@pytest.mark.parametrize("resource_type", RESOURCE_TYPES)
def test_crud_lifecycle(client: SyncFHIRClient, fhir_base: str, resource_type: str) -> None:
    created = to_resource(client, new_body(client, resource_type))
    created.save()
    assert created.id
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"]
    v1 = plain(created)

    read = client.reference(resource_type, created.id).to_resource()
    assert plain(read) == v1

    change(created)
    created.save()
    assert created["meta"]["versionId"] == "2"
    v2 = plain(created)
    assert without_meta(v2) != without_meta(v1)
    assert plain(client.reference(resource_type, created.id).to_resource()) == v2

    patched = json_patch_client(fhir_base).execute(
        f"{resource_type}/{created.id}", method="patch", data=patch_operations(resource_type)
    )
    assert patched["meta"]["versionId"] == "3"
    assert patched_value(patched) == patch_operations(resource_type)[-1]["value"]
    v3 = client.reference(resource_type, created.id).to_resource()
    assert plain(v3) == dict(patched)

    for version, expected in (("1", v1), ("2", v2), ("3", plain(v3))):
        old = client.execute(f"{resource_type}/{created.id}/_history/{version}", method="get")
        assert dict(old) == expected, f"vread of version {version}"

    created.delete()
    with pytest.raises(ResourceNotFound):
        client.reference(resource_type, created.id).to_resource()
    # Older versions stay readable after a delete.
    old = client.execute(f"{resource_type}/{created.id}/_history/2", method="get")
    assert dict(old) == v2


@pytest.mark.parametrize("resource_type", RESOURCE_TYPES)
def test_read_after_delete_is_410_with_operation_outcome(
    client: SyncFHIRClient, fhir_base: str, resource_type: str
) -> None:
    resource = to_resource(client, new_body(client, resource_type))
    resource.save()
    resource.delete()

    response = requests.get(
        f"{fhir_base}/{resource_type}/{resource.id}", headers={"Accept": FHIR_JSON}, timeout=10
    )
    assert response.status_code == 410, response.text
    assert_operation_outcome(response, "deleted")
    assert response.headers.get("ETag") == 'W/"2"'

    # A second delete is idempotent and does not add a version.
    again = requests.delete(f"{fhir_base}/{resource_type}/{resource.id}", timeout=10)
    assert again.status_code == 200, again.text
    assert again.headers.get("ETag") == 'W/"2"'


def test_fhirpy_patch_is_refused_without_changing_the_resource(
    client: SyncFHIRClient, fhir_base: str
) -> None:
    """fhirpy's ``.patch(**fields)`` sends a partial resource as application/json (a merge
    patch, which FHIR R4 does not define); the server answers 415 and writes nothing."""
    resource = to_resource(client, patient())
    resource.save()

    with pytest.raises(OperationOutcome, match="json-patch"):
        client.patch("Patient", resource.id, active=False)
    response = requests.patch(
        f"{fhir_base}/Patient/{resource.id}", json={"active": False}, timeout=10
    )
    assert response.status_code == 415, response.text
    assert_operation_outcome(response)

    current = client.reference("Patient", resource.id).to_resource()
    assert current["meta"]["versionId"] == "1"
    assert "active" not in current


# -- history ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resource_type", RESOURCE_TYPES)
def test_instance_history_pages_newest_first(
    client: SyncFHIRClient, fhir_base: str, resource_type: str
) -> None:
    resource = make_versions(client, fhir_base, resource_type)

    first = client.execute(
        f"{resource_type}/{resource.id}/_history", method="get", params={"_count": 2}
    )
    pages = follow_pages(first, fhirpy_fetch(client))

    assert [len(page.get("entry", [])) for page in pages] == [2, 2, 1]
    entries = [entry for page in pages for entry in page["entry"]]
    assert all(page["type"] == "history" for page in pages)
    assert [entry_key(entry) for entry in entries] == [
        (resource_type, resource.id, version) for version in (5, 4, 3, 2, 1)
    ]
    assert [entry["request"]["method"] for entry in entries] == [
        "DELETE",
        "PATCH",
        "PUT",
        "PUT",
        "POST",
    ]
    assert "resource" not in entries[0], "a deletion carries no resource"
    for entry in entries[1:]:
        version = entry_key(entry)[2]
        assert entry["resource"]["meta"]["versionId"] == str(version)
        vread = client.execute(f"{resource_type}/{resource.id}/_history/{version}", method="get")
        assert dict(vread) == dict(entry["resource"])
    modified = [entry["response"]["lastModified"] for entry in entries]
    assert modified == sorted(modified, reverse=True)


@pytest.mark.parametrize("resource_type", RESOURCE_TYPES)
def test_type_history_pages_cover_every_version_once(
    client: SyncFHIRClient, fhir_base: str, resource_type: str
) -> None:
    resource = make_versions(client, fhir_base, resource_type)
    params: dict[str, Any] = {"_count": 2}
    if resource_type == "Patient":
        # Other tests write many Patients to this server; start where this one was created.
        v1 = client.execute(f"Patient/{resource.id}/_history/1", method="get")
        params["_since"] = v1["meta"]["lastUpdated"]

    first = client.execute(f"{resource_type}/_history", method="get", params=params)
    pages = follow_pages(first, fhirpy_fetch(client))

    assert all(len(page.get("entry", [])) <= 2 for page in pages)
    keys = [entry_key(entry) for page in pages for entry in page.get("entry", [])]
    assert len(keys) == len(set(keys)), "a version appears on more than one page"
    assert {key[0] for key in keys} == {resource_type}
    mine = [version for (_, rid, version) in keys if rid == resource.id]
    assert mine == [5, 4, 3, 2, 1]


# -- conditional interactions ----------------------------------------------------------------


def test_stale_if_match_is_412(client: SyncFHIRClient, fhir_base: str) -> None:
    resource = to_resource(client, patient())
    resource.save()
    change(resource)
    resource.save()
    assert resource["meta"]["versionId"] == "2"
    url = f"{fhir_base}/Patient/{resource.id}"
    body = {**plain(resource), "active": True}
    headers = {"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'}

    stale_put = requests.put(url, json=body, headers=headers, timeout=10)
    assert stale_put.status_code == 412, stale_put.text
    assert_operation_outcome(stale_put)

    stale_patch = requests.patch(
        url,
        json=[{"op": "add", "path": "/active", "value": True}],
        headers={"Content-Type": JSON_PATCH, "If-Match": 'W/"1"'},
        timeout=10,
    )
    assert stale_patch.status_code == 412, stale_patch.text
    stale_delete = requests.delete(url, headers={"If-Match": 'W/"1"'}, timeout=10)
    assert stale_delete.status_code == 412, stale_delete.text

    current = client.reference("Patient", resource.id).to_resource()
    assert plain(current) == plain(resource), "a refused write changed the resource"

    fresh = requests.put(url, json=body, headers={**headers, "If-Match": 'W/"2"'}, timeout=10)
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["ETag"] == 'W/"3"'


def test_conditional_create_returns_the_existing_resource(fhir_base: str) -> None:
    value = str(uuid.uuid4())
    body = patient(identifier=value)
    headers = {
        "Content-Type": FHIR_JSON,
        "If-None-Exist": f"identifier={IDENTIFIER_SYSTEM}|{value}",
    }

    first = requests.post(f"{fhir_base}/Patient", json=body, headers=headers, timeout=10)
    assert first.status_code == 201, first.text
    assert first.headers["Location"].startswith(f"{fhir_base}/Patient/{first.json()['id']}")

    second = requests.post(f"{fhir_base}/Patient", json=body, headers=headers, timeout=10)
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert second.headers["ETag"] == 'W/"1"'

    history = requests.get(f"{fhir_base}/Patient/{first.json()['id']}/_history", timeout=10)
    assert len(history.json()["entry"]) == 1, "the second create wrote a version"


# -- conformance -----------------------------------------------------------------------------


def test_capability_statement(client: SyncFHIRClient, fhir_base: str) -> None:
    statement = client.execute("metadata", method="get")
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    formats = statement["format"]
    assert "json" in formats
    assert all("json" in media for media in formats), f"non-JSON format claimed: {formats}"
    assert not any("xml" in media or "turtle" in media for media in formats)

    resources = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    for resource_type in RESOURCE_TYPES:
        codes = {interaction["code"] for interaction in resources[resource_type]["interaction"]}
        assert {"read", "vread", "update", "patch", "delete", "create"} <= codes
        assert {"history-instance", "history-type"} <= codes

    response = requests.get(f"{fhir_base}/metadata", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(FHIR_JSON)


def test_fhirpy_get_or_create_does_not_duplicate(client: SyncFHIRClient) -> None:
    """fhirpy's ``get_or_create`` sends ``POST Patient?identifier=...``: a conditional create."""
    mrn = f"GOC-{uuid.uuid4().hex[:8]}"
    body = patient(identifier=mrn)
    search = client.resources("Patient").search(identifier=f"{IDENTIFIER_SYSTEM}|{mrn}")
    first, created = search.get_or_create(to_resource(client, body))
    assert created
    second, created_again = search.get_or_create(to_resource(client, body))
    assert not created_again
    assert second.id == first.id
