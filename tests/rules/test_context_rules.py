"""Clinical, medical technology, finance and platform rules: each allowed and refused,
through REST and a transaction, and the guarded one under simultaneous bookings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fhir_server.core import Core
from tests.rules.conftest import (
    FHIR_JSON,
    create,
    encounter,
    hospital_patient,
    keys,
    practitioner,
    transaction,
)
from tests.rules.resources import (
    appointment,
    charge_item,
    device,
    dispense,
    document,
    glucose,
    imaging_order,
    invoice,
    medication,
    payment,
    prescription,
    report,
    role,
    signature,
)
from tests.rules.test_patient_rules import core  # noqa: F401 (the fixture)


def setting(client: TestClient) -> tuple[str, str]:
    """A registered patient and a practitioner."""
    patient = create(client, hospital_patient("MRN-CTX"))
    doctor = create(client, practitioner())
    return patient["id"], doctor["id"]


def refused(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    outcome: dict[str, Any] = answer.json()
    assert code in keys(outcome), outcome
    return outcome


def post(client: TestClient, resource: dict[str, Any]) -> Any:
    return client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)


def test_a_prescription_belongs_to_a_consultation_in_progress_or_finished(
    enforced: TestClient,
) -> None:
    patient, doctor = setting(enforced)
    visit = create(enforced, encounter(patient, doctor, "AMB", "in-progress"))
    kept = create(enforced, prescription(patient, visit["id"], doctor))
    planned = create(enforced, encounter(patient, doctor, "AMB", "planned"))
    outcome = refused(
        post(enforced, prescription(patient, planned["id"], doctor)), 422, "rofecare-1904"
    )
    assert outcome["issue"][0]["expression"] == ["MedicationRequest.encounter"]
    refused(post(enforced, prescription(patient, "gone", doctor)), 422, "rofecare-1904")
    other = create(enforced, hospital_patient("MRN-CTX-2"))
    refused(post(enforced, prescription(other["id"], visit["id"], doctor)), 422, "rofecare-1904")
    # Once the visit is closed and even cancelled, the prescription can still be stopped.
    enforced.put(
        f"/fhir/Encounter/{visit['id']}", json={**visit, "status": "cancelled"}, headers=FHIR_JSON
    )
    stopped = enforced.put(
        f"/fhir/MedicationRequest/{kept['id']}",
        json={**kept, "status": "stopped"},
        headers=FHIR_JSON,
    )
    assert stopped.status_code == 200, stopped.text
    # In a transaction, the consultation may be created by the same bundle.
    bundle = transaction(
        ("urn:uuid:visit", encounter(patient, doctor, "AMB", "in-progress")),
        (
            "urn:uuid:rx",
            {**prescription(patient, None, doctor), "encounter": {"reference": "urn:uuid:visit"}},
        ),
    )
    assert enforced.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200


def test_a_lab_result_is_final_only_once_a_biologist_validated_it(enforced: TestClient) -> None:
    patient, doctor = setting(enforced)
    biologist = create(enforced, practitioner(name=[{"family": "Sow"}]))["id"]
    create(enforced, role(biologist, "biologist"))
    retired = create(enforced, practitioner(name=[{"family": "Fall"}]))["id"]
    create(enforced, role(retired, "biologist", active=False))
    create(enforced, role(doctor, "physician"))
    draft = create(enforced, glucose(patient, 5.0, performer=f"Practitioner/{doctor}"))
    final = {**draft, "status": "final"}
    answer = enforced.put(f"/fhir/Observation/{draft['id']}", json=final, headers=FHIR_JSON)
    outcome = refused(answer, 422, "rofecare-1906")
    assert outcome["issue"][0]["expression"] == ["Observation.performer"]
    retired_final = {**final, "performer": [{"reference": f"Practitioner/{retired}"}]}
    answer = enforced.put(f"/fhir/Observation/{draft['id']}", json=retired_final, headers=FHIR_JSON)
    refused(answer, 422, "rofecare-1906")
    validated = {**final, "performer": [{"reference": f"Practitioner/{biologist}"}]}
    answer = enforced.put(f"/fhir/Observation/{draft['id']}", json=validated, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    by_role = create(enforced, role(biologist, "biologist"))
    create(
        enforced,
        glucose(patient, 5.0, status="final", performer=f"PractitionerRole/{by_role['id']}"),
    )
    # Reports: the results interpreter validates them.
    refused(
        post(enforced, report(patient, status="final", interpreter=f"Practitioner/{doctor}")),
        422,
        "rofecare-1906",
    )
    create(enforced, report(patient, status="final", interpreter=f"Practitioner/{biologist}"))
    create(enforced, report(patient, status="preliminary"))
    # Through a transaction, too (a final result without any performer is refused by its
    # profile, rof-lr-1, before this rule).
    bundle = transaction(
        ("urn:uuid:r", glucose(patient, 5.0, status="final", performer=f"Practitioner/{doctor}"))
    )
    refused(enforced.post("/fhir", json=bundle, headers=FHIR_JSON), 422, "rofecare-1906")


def flags_of(client: TestClient, patient: str) -> list[dict[str, Any]]:
    found = client.get("/fhir/Flag", params={"subject": f"Patient/{patient}"}).json()
    return [entry["resource"] for entry in found.get("entry", [])]


def interpretation(resource: dict[str, Any]) -> list[str]:
    return [
        coding["code"]
        for concept in resource.get("interpretation", [])
        for coding in concept.get("coding", [])
    ]


def test_an_out_of_range_result_is_interpreted_and_flagged(enforced: TestClient) -> None:
    patient, _ = setting(enforced)
    normal = create(enforced, glucose(patient, 5.0))
    assert interpretation(normal) == ["N"] and flags_of(enforced, patient) == []
    high = create(enforced, glucose(patient, 7.2))
    assert interpretation(high) == ["H"]
    [flag] = flags_of(enforced, patient)
    assert flag["status"] == "active" and "(H)" in flag["code"]["text"]
    assert flag["extension"][0]["valueReference"]["reference"] == f"Observation/{high['id']}"
    # Units are compared in canonical UCUM: 120 mg/dL of glucose... is not mmol/L-comparable,
    # but 7200 umol/L is 7.2 mmol/L.
    micro = create(enforced, glucose(patient, 3000, unit="umol/L"))
    assert interpretation(micro) == ["L"]
    critical = {
        "low": {"value": 2.2, "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "high": {"value": 25, "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "type": {
            "coding": [
                {
                    "system": "http://rofecare.com/fhir/CodeSystem/reference-range-type",
                    "code": "critical",
                }
            ]
        },
    }
    ranges = [*glucose(patient, 0)["referenceRange"], critical]
    panic = create(enforced, glucose(patient, 30, ranges=ranges))
    assert interpretation(panic) == ["HH"]
    # A laboratory's own codings are kept beside the server's; a corrected value back in
    # range closes the flag of its result.
    corrected = {
        **high,
        "valueQuantity": {**high["valueQuantity"], "value": 5.1},
        "interpretation": [*high["interpretation"], {"text": "lipemic sample"}],
    }
    answer = enforced.put(f"/fhir/Observation/{high['id']}", json=corrected, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert interpretation(answer.json()) == ["N"]
    assert {"text": "lipemic sample"} in answer.json()["interpretation"]
    statuses = sorted(flag["status"] for flag in flags_of(enforced, patient))
    assert statuses == ["active", "active", "inactive"]  # the low, the critical, the corrected
    # A range for another population, or no range: no interpretation is invented.
    aged = [{**glucose(patient, 0)["referenceRange"][0], "age": {"low": {"value": 65}}}]
    assert interpretation(create(enforced, glucose(patient, 9, ranges=aged))) == []


def test_a_create_with_its_flag_is_audited_as_a_create(enforced: TestClient) -> None:
    """The Flag is the server's companion of the client's create: one AuditEvent, of the
    create, names both (it was audited as a transaction)."""
    patient, _ = setting(enforced)
    high = create(enforced, glucose(patient, 8.1))
    [flag] = flags_of(enforced, patient)
    found = enforced.get("/fhir/AuditEvent", params={"entity": f"Observation/{high['id']}"}).json()
    [event] = [entry["resource"] for entry in found["entry"]]
    assert [coding["code"] for coding in event["subtype"]] == ["create"]
    assert event["action"] == "C"
    named = {entity["what"]["reference"] for entity in event["entity"]}
    assert {f"Observation/{high['id']}", f"Flag/{flag['id']}"} <= named


def test_the_flag_is_written_in_the_result_s_transaction(enforced: TestClient) -> None:
    patient, _ = setting(enforced)
    bundle = transaction(("urn:uuid:g", glucose(patient, 9.9)))
    answer = enforced.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    [flag] = flags_of(enforced, patient)
    location = answer.json()["entry"][0]["response"]["location"]
    assert flag["extension"][0]["valueReference"]["reference"] == "/".join(location.split("/")[:2])


def test_a_device_under_maintenance_is_not_used_by_a_new_exam(enforced: TestClient) -> None:
    patient, doctor = setting(enforced)
    broken = create(enforced, device(maintenance=True))["id"]
    working = create(enforced, device(maintenance=False))["id"]
    order = create(enforced, imaging_order(patient, doctor, working))
    refused(post(enforced, imaging_order(patient, doctor, broken)), 422, "rofecare-1908")
    # An exam under way keeps its device when the device goes to maintenance.
    machine = enforced.get(f"/fhir/Device/{working}").json()
    under = {**machine, "statusReason": device(maintenance=True)["statusReason"]}
    enforced.put(f"/fhir/Device/{working}", json=under, headers=FHIR_JSON)
    done = enforced.put(
        f"/fhir/ServiceRequest/{order['id']}",
        json={**order, "status": "completed"},
        headers=FHIR_JSON,
    )
    assert done.status_code == 200, done.text
    bundle = transaction(("urn:uuid:o", imaging_order(patient, doctor, working)))
    refused(enforced.post("/fhir", json=bundle, headers=FHIR_JSON), 422, "rofecare-1908")


def test_an_invoice_references_acts_of_its_patient(enforced: TestClient) -> None:
    patient, doctor = setting(enforced)
    visit = create(enforced, encounter(patient, doctor, "AMB", "finished"))["id"]
    act = create(enforced, charge_item(patient, visit))["id"]
    create(enforced, invoice(patient, f"ChargeItem/{act}"))
    # A line without an act is refused by the invoice profile first, and by the rule when
    # profiles only warn.
    refused(post(enforced, invoice(patient, None)), 422, "type:Invoice.lineItem.chargeItem[x]")
    outcome = refused(post(enforced, invoice(patient, "ChargeItem/none")), 422, "rofecare-1910")
    assert outcome["issue"][0]["expression"] == ["Invoice.lineItem[0].chargeItemReference"]
    other = create(enforced, hospital_patient("MRN-INV"))["id"]
    refused(post(enforced, invoice(other, f"ChargeItem/{act}")), 422, "rofecare-1910")
    bundle = transaction(
        ("urn:uuid:act", charge_item(patient, visit)),
        ("urn:uuid:inv", invoice(patient, "urn:uuid:act")),
    )
    assert enforced.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200


def test_appointments_never_overlap_on_a_practitioner_room_or_device(
    enforced: TestClient,
) -> None:
    patient, doctor = setting(enforced)
    room = create(enforced, {"resourceType": "Location", "name": "Consultation room 3"})["id"]
    doc, pat = f"Practitioner/{doctor}", f"Patient/{patient}"
    first = create(enforced, appointment("2026-12-10T09:00:00Z", "2026-12-10T09:30:00Z", doc, pat))
    overlap = appointment("2026-12-10T09:15:00Z", "2026-12-10T09:45:00Z", doc)
    outcome = refused(post(enforced, overlap), 409, "rofecare-1911")
    assert first["id"] in outcome["issue"][0]["diagnostics"]
    # Back to back is not an overlap; another practitioner, or a cancelled one, is free.
    create(enforced, appointment("2026-12-10T09:30:00Z", "2026-12-10T10:00:00Z", doc))
    create(
        enforced, appointment("2026-12-10T09:00:00Z", "2026-12-10T09:30:00Z", f"Location/{room}")
    )
    refused(
        post(
            enforced,
            appointment(
                "2026-12-10T09:10:00+01:00", "2026-12-10T10:20:00+01:00", f"Location/{room}"
            ),
        ),
        409,
        "rofecare-1911",
    )
    cancelled = enforced.put(
        f"/fhir/Appointment/{first['id']}", json={**first, "status": "cancelled"}, headers=FHIR_JSON
    )
    assert cancelled.status_code == 200
    create(enforced, appointment("2026-12-10T09:00:00Z", "2026-12-10T09:30:00Z", doc))
    both = transaction(
        ("urn:uuid:a", appointment("2026-12-11T09:00:00Z", "2026-12-11T10:00:00Z", doc)),
        ("urn:uuid:b", appointment("2026-12-11T09:30:00Z", "2026-12-11T10:30:00Z", doc)),
    )
    refused(enforced.post("/fhir", json=both, headers=FHIR_JSON), 409, "rofecare-1911")


async def test_of_simultaneous_bookings_of_one_practitioner_exactly_one_wins(
    core: Core,  # noqa: F811
) -> None:
    doctor = await core.service.create("Practitioner", practitioner())
    actor = f"Practitioner/{doctor.version.resource_id}"
    slots = [
        appointment("2026-12-12T09:00:00Z", "2026-12-12T09:30:00Z", actor),
        appointment("2026-12-12T09:10:00Z", "2026-12-12T09:40:00Z", actor),
        appointment("2026-12-12T09:20:00Z", "2026-12-12T09:50:00Z", actor),
    ]  # each overlaps the two others
    outcomes = await asyncio.gather(
        *(core.service.create("Appointment", slot) for slot in slots), return_exceptions=True
    )
    assert [type(o).__name__ for o in outcomes].count("Conflict") == 2


def test_a_signed_document_can_no_longer_change(enforced: TestClient) -> None:
    patient, doctor = setting(enforced)
    draft = create(enforced, document(patient))
    amended = enforced.put(
        f"/fhir/DocumentReference/{draft['id']}",
        json={**draft, "description": "Discharge summary, amended"},
        headers=FHIR_JSON,
    )
    assert amended.status_code == 200
    sign = create(enforced, signature(f"DocumentReference/{draft['id']}", f"Practitioner/{doctor}"))
    signed = amended.json()
    answer = enforced.put(
        f"/fhir/DocumentReference/{draft['id']}",
        json={**signed, "description": "changed after signature"},
        headers=FHIR_JSON,
    )
    refused(answer, 409, "rofecare-1912")
    refused(enforced.delete(f"/fhir/DocumentReference/{draft['id']}"), 409, "rofecare-1912")
    refused(enforced.delete(f"/fhir/Provenance/{sign['id']}"), 409, "rofecare-1912")
    unsigned = {**sign, "signature": []}
    unsigned.pop("signature")
    refused(
        enforced.put(f"/fhir/Provenance/{sign['id']}", json=unsigned, headers=FHIR_JSON),
        409,
        "rofecare-1912",
    )
    assert enforced.get(f"/fhir/DocumentReference/{draft['id']}").json()["meta"]["versionId"] == "2"


def test_validate_mode_delete_tells_a_signed_document_stays(enforced: TestClient) -> None:
    patient, doctor = setting(enforced)
    draft = create(enforced, document(patient))
    target = f"/fhir/DocumentReference/{draft['id']}/$validate?mode=delete"
    assert enforced.post(target, json={}, headers=FHIR_JSON).json()["issue"][0]["severity"] == (
        "information"
    )
    create(enforced, signature(f"DocumentReference/{draft['id']}", f"Practitioner/{doctor}"))
    answer = enforced.post(target, json={}, headers=FHIR_JSON)
    assert "rofecare-1912" in keys(answer.json())


def specimen_example() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "profiles/medtech/examples"
    resource: dict[str, Any] = json.loads((path / "rofecare-specimen.valid.json").read_text())
    return resource


def test_a_sample_keeps_its_chain_of_custody(enforced: TestClient) -> None:
    sample = create(enforced, specimen_example())
    url = f"/fhir/Specimen/{sample['id']}"
    step = {"description": "Aliquoted", "timeDateTime": "2026-03-14T10:40:00+01:00"}
    grown = {**sample, "processing": [*sample["processing"], step]}
    answer = enforced.put(url, json=grown, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    current = answer.json()
    changes = {
        "Specimen.receivedTime": {**current, "receivedTime": "2026-03-14T10:10:00+01:00"},
        "Specimen.processing": {**current, "processing": current["processing"][1:]},
        "Specimen.collection.collector": {
            **current,
            "collection": {**current["collection"], "collector": {"reference": "Practitioner/x"}},
        },
    }
    for path, changed in changes.items():
        outcome = refused(enforced.put(url, json=changed, headers=FHIR_JSON), 422, "rofecare-1909")
        assert outcome["issue"][0]["expression"] == [path]
    refused(enforced.delete(url), 422, "rofecare-1909")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": changes["Specimen.receivedTime"],
                "request": {"method": "PUT", "url": f"Specimen/{sample['id']}"},
            }
        ],
    }
    refused(enforced.post("/fhir", json=bundle, headers=FHIR_JSON), 422, "rofecare-1909")


def pharmacy_setting(client: TestClient) -> tuple[str, str, str]:
    patient, doctor = setting(client)
    visit = create(client, encounter(patient, doctor, "AMB", "in-progress"))["id"]
    order = create(client, prescription(patient, visit, doctor))["id"]
    return patient, doctor, order


def test_a_dispense_needs_a_valid_unexpired_prescription(enforced: TestClient) -> None:
    patient, _, order = pharmacy_setting(enforced)
    drug = create(enforced, medication())["id"]
    handed = create(enforced, dispense(patient, order, drug))
    # After the prescription's validity (2027-01-01) it is expired.
    late = dispense(patient, order, drug, whenHandedOver="2027-01-02T09:00:00Z")
    outcome = refused(post(enforced, late), 422, "rofecare-1914")
    assert outcome["issue"][0]["expression"] == ["MedicationDispense.authorizingPrescription[0]"]
    other = create(enforced, hospital_patient("MRN-PHARM"))["id"]
    refused(post(enforced, dispense(other, order, drug)), 422, "rofecare-1914")
    refused(post(enforced, dispense(patient, "missing", drug)), 422, "rofecare-1914")
    stopped = enforced.get(f"/fhir/MedicationRequest/{order}").json()
    enforced.put(
        f"/fhir/MedicationRequest/{order}", json={**stopped, "status": "stopped"}, headers=FHIR_JSON
    )
    refused(post(enforced, dispense(patient, order, drug)), 422, "rofecare-1914")
    # A dispense already made is history: a note can still be added.
    noted = {**handed, "note": [{"text": "Patient counselled"}]}
    answer = enforced.put(f"/fhir/MedicationDispense/{handed['id']}", json=noted, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    bundle = transaction(("urn:uuid:d", dispense(patient, order, drug)))
    refused(enforced.post("/fhir", json=bundle, headers=FHIR_JSON), 422, "rofecare-1914")


def test_an_expired_batch_is_never_dispensed(enforced: TestClient) -> None:
    patient, _, order = pharmacy_setting(enforced)
    expired = create(enforced, medication(expires="2026-11-30"))["id"]
    outcome = refused(post(enforced, dispense(patient, order, expired)), 422, "rofecare-1915")
    assert outcome["issue"][0]["expression"] == ["MedicationDispense.medicationReference"]
    # The day of expiry still counts as valid; after it, not.
    today = create(enforced, medication(expires="2026-12-02"))["id"]
    create(enforced, dispense(patient, order, today))
    create(enforced, dispense(patient, order, create(enforced, medication(expires=None))["id"]))


def test_a_payment_never_exceeds_the_balance_due(enforced: TestClient) -> None:
    patient, doctor = setting(enforced)
    visit = create(enforced, encounter(patient, doctor, "AMB", "finished"))["id"]
    act = create(enforced, charge_item(patient, visit))["id"]
    bill = create(enforced, invoice(patient, f"ChargeItem/{act}"))["id"]  # 5,000 XOF
    first = create(enforced, payment(bill, 3000))
    outcome = refused(post(enforced, payment(bill, 2500)), 409, "rofecare-1916")
    assert "2000" in outcome["issue"][0]["diagnostics"]
    refused(post(enforced, payment(bill, 100, "EUR")), 422, "rofecare-1916")
    create(enforced, payment(bill, 2000))
    # A cancelled payment frees its amount; changing a payment is judged again.
    enforced.put(
        f"/fhir/PaymentReconciliation/{first['id']}",
        json={**first, "status": "cancelled"},
        headers=FHIR_JSON,
    )
    create(enforced, payment(bill, 3000))
    too_much = transaction(("urn:uuid:p1", payment(bill, 1)))
    refused(enforced.post("/fhir", json=too_much, headers=FHIR_JSON), 409, "rofecare-1916")
    refused(post(enforced, payment("nope", 10)), 422, "rofecare-1916")


async def test_of_simultaneous_payments_of_one_balance_at_most_it_is_paid(
    core: Core,  # noqa: F811
) -> None:
    service = core.service
    patient = (await service.create("Patient", hospital_patient("MRN-PAY"))).version.resource_id
    doctor = (await service.create("Practitioner", practitioner())).version.resource_id
    visit = await service.create("Encounter", encounter(patient, doctor, "AMB", "finished"))
    act = await service.create("ChargeItem", charge_item(patient, visit.version.resource_id))
    bill = await service.create(
        "Invoice", invoice(patient, f"ChargeItem/{act.version.resource_id}")
    )
    outcomes = await asyncio.gather(
        *(
            service.create("PaymentReconciliation", payment(bill.version.resource_id, 3000))
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes].count("WriteResult") == 1
