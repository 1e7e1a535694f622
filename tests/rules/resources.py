"""Realistic resources of the hospital, complete enough for the Rofecare profiles."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
STAFF_ROLE = "http://rofecare.com/fhir/CodeSystem/staff-role"
LAB = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
        }
    ]
}


def prescription(patient: str, visit: str | None, doctor: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Amoxicillin 500 mg capsule"},
        "subject": {"reference": f"Patient/{patient}"},
        "requester": {"reference": f"Practitioner/{doctor}"},
        "authoredOn": "2026-12-01T09:00:00Z",
        "dosageInstruction": [{"text": "1 capsule 3 times a day for 7 days"}],
        "dispenseRequest": {"validityPeriod": {"start": "2026-12-01", "end": "2027-01-01"}},
        **extra,
    }
    if visit is not None:
        resource["encounter"] = {"reference": f"Encounter/{visit}"}
    return resource


def role(practitioner: str, code: str, *, active: bool = True) -> dict[str, Any]:
    return {
        "resourceType": "PractitionerRole",
        "active": active,
        "practitioner": {"reference": f"Practitioner/{practitioner}"},
        "code": [{"coding": [{"system": STAFF_ROLE, "code": code}]}],
    }


def glucose(
    patient: str,
    value: float,
    *,
    status: str = "preliminary",
    performer: str | None = None,
    unit: str = "mmol/L",
    ranges: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "category": [LAB],
        "code": {
            "coding": [{"system": LOINC, "code": "15074-8", "display": "Glucose [Moles/volume]"}],
            "text": "Glucose",
        },
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-12-01T10:00:00Z",
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
        "referenceRange": ranges
        if ranges is not None
        else [
            {
                "low": {
                    "value": 3.9,
                    "unit": "mmol/L",
                    "system": "http://unitsofmeasure.org",
                    "code": "mmol/L",
                },
                "high": {
                    "value": 5.6,
                    "unit": "mmol/L",
                    "system": "http://unitsofmeasure.org",
                    "code": "mmol/L",
                },
            }
        ],
        **extra,
    }
    if performer is not None:
        resource["performer"] = [{"reference": performer}]
    return resource


def report(patient: str, *, status: str, interpreter: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": status,
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": "24323-8", "display": "Metabolic panel"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-12-01T10:00:00Z",
        "issued": "2026-12-01T12:00:00Z",
    }
    if interpreter is not None:
        resource["resultsInterpreter"] = [{"reference": interpreter}]
    return resource


def device(*, maintenance: bool) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "identifier": [{"system": "http://rofecare.com/fhir/sid/equipment", "value": "XR-2"}],
        "serialNumber": "SN-2026-0042",
        "status": "active",
        "type": {"text": "X-ray unit"},
    }
    if maintenance:
        resource["statusReason"] = [
            {
                "coding": [
                    {
                        "system": "http://rofecare.com/fhir/CodeSystem/device-status-reason",
                        "code": "maintenance",
                    }
                ]
            }
        ]
    return resource


def imaging_order(patient: str, doctor: str, machine: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [
            {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}
                ]
            }
        ],
        "code": {"text": "Chest X-ray"},
        "subject": {"reference": f"Patient/{patient}"},
        "requester": {"reference": f"Practitioner/{doctor}"},
        "performer": [{"reference": f"Device/{machine}"}],
        "bodySite": [{"text": "Chest"}],
    }


def charge_item(patient: str, visit: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ChargeItem",
        "status": "billable",
        "code": {"text": "General consultation"},
        "subject": {"reference": f"Patient/{patient}"},
        "context": {"reference": f"Encounter/{visit}"},
        "occurrenceDateTime": "2026-12-01T09:30:00Z",
        "priceOverride": {"value": 5000, "currency": "XOF"},
        **extra,
    }


def invoice(patient: str, *items: str | None) -> dict[str, Any]:
    lines = [
        {"sequence": n + 1, **({"chargeItemReference": {"reference": item}} if item else {})}
        for n, item in enumerate(items)
    ]
    for line in lines:
        if "chargeItemReference" not in line:
            line["chargeItemCodeableConcept"] = {"text": "Unlisted act"}
    return {
        "resourceType": "Invoice",
        "status": "issued",
        "subject": {"reference": f"Patient/{patient}"},
        "date": "2026-12-01T11:00:00Z",
        "lineItem": lines,
        "totalGross": {"value": 5000, "currency": "XOF"},
    }


def appointment(start: str, end: str, *actors: str, status: str = "booked") -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": status,
        "start": start,
        "end": end,
        "participant": [{"actor": {"reference": actor}, "status": "accepted"} for actor in actors],
    }


def document(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "18842-5", "display": "Discharge summary"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "date": "2026-12-01T15:00:00Z",
        "content": [
            {"attachment": {"contentType": "text/plain", "data": "RGlzY2hhcmdlZCB3ZWxsLg=="}}
        ],
    }


def signature(target: str, signer: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": "2026-12-01T15:05:00Z",
        "agent": [{"who": {"reference": signer}}],
        "signature": [
            {
                "type": [
                    {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}
                ],
                "when": "2026-12-01T15:05:00Z",
                "who": {"reference": signer},
                "sigFormat": "application/jose",
                "data": "ZXlKaGJHY2lPaUpGVXpJMU5pSjk=",
            }
        ],
    }


def medication(*, expires: str | None = "2027-06-30") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Medication",
        "code": {"text": "Amoxicillin 500 mg capsule"},
        "status": "active",
    }
    if expires is not None:
        resource["batch"] = {"lotNumber": "AMX-2611", "expirationDate": expires}
    return resource


def dispense(patient: str, prescription: str, drug: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationReference": {"reference": f"Medication/{drug}"},
        "subject": {"reference": f"Patient/{patient}"},
        "authorizingPrescription": [{"reference": f"MedicationRequest/{prescription}"}],
        "quantity": {"value": 21, "unit": "capsule"},
        "whenPrepared": "2026-12-02T10:30:00Z",
        "whenHandedOver": "2026-12-02T10:42:00Z",
        **extra,
    }


def payment(invoice_id: str, amount: float, currency: str = "XOF") -> dict[str, Any]:
    return {
        "resourceType": "PaymentReconciliation",
        "status": "active",
        "created": "2026-12-02T11:20:00Z",
        "outcome": "complete",
        "paymentDate": "2026-12-02",
        "paymentAmount": {"value": amount, "currency": currency},
        "detail": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/payment-type",
                            "code": "payment",
                        }
                    ]
                },
                "request": {"reference": f"Invoice/{invoice_id}"},
                "amount": {"value": amount, "currency": currency},
            }
        ],
    }
