"""Data for ``$everything``: the two R4 OperationDefinitions and the care dates per type.

The definitions carry the official canonical URLs and the R4 (4.0.1) parameters, so the
CapabilityStatement can point at them and the shared parser checks exactly those. Their
descriptions are condensed from https://hl7.org/fhir/R4/patient-operation-everything.html
and https://hl7.org/fhir/R4/encounter-operation-everything.html.
"""

from __future__ import annotations

from typing import Any

_RESULT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "_since",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "instant",
        "documentation": "Only resources whose meta.lastUpdated is at or after this instant.",
    },
    {
        "name": "_type",
        "use": "in",
        "min": 0,
        "max": "*",
        "type": "code",
        "documentation": "Comma-separated resource types: only resources of these types.",
    },
    {
        "name": "_count",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "integer",
        "documentation": "The page size; the server pages the answer with next links.",
    },
    {
        "name": "return",
        "use": "out",
        "min": 1,
        "max": "1",
        "type": "Bundle",
        "documentation": 'The bundle type is "searchset".',
    },
]

PATIENT_EVERYTHING: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "id": "Patient-everything",
    "url": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "version": "4.0.1",
    "name": "Everything",
    "title": "Fetch Patient Record",
    "status": "active",
    "kind": "operation",
    "description": (
        "All the information related to the patient: the Patient, the resources of its "
        "patient compartment, and the resources those reference that support them "
        "(practitioners, organizations, locations, medications...)."
    ),
    "affectsState": False,
    "code": "everything",
    "resource": ["Patient"],
    "system": False,
    "type": True,
    "instance": True,
    "parameter": [
        {
            "name": "start",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "date",
            "documentation": "Care dates from this date on (not record currency dates).",
        },
        {
            "name": "end",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "date",
            "documentation": "Care dates up to the end of this date.",
        },
        *_RESULT_PARAMETERS,
    ],
}

ENCOUNTER_EVERYTHING: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "id": "Encounter-everything",
    "url": "http://hl7.org/fhir/OperationDefinition/Encounter-everything",
    "version": "4.0.1",
    "name": "Everything",
    "title": "Fetch Encounter Record",
    "status": "active",
    "kind": "operation",
    "description": (
        "All the information related to the encounter: the Encounter, the resources of its "
        "encounter compartment, and the resources those reference."
    ),
    "affectsState": False,
    "code": "everything",
    "resource": ["Encounter"],
    "system": False,
    "type": False,
    "instance": True,
    "parameter": list(_RESULT_PARAMETERS),
}

CLINICAL_DATE = (
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "ClinicalImpression",
    "Composition",
    "Consent",
    "DiagnosticReport",
    "Encounter",
    "EpisodeOfCare",
    "FamilyMemberHistory",
    "Flag",
    "Immunization",
    "List",
    "Observation",
    "Procedure",
    "RiskAssessment",
    "SupplyRequest",
)
"""The types of R4's own ``clinical-date`` search parameter (code ``date``)."""

CARE_DATES: dict[str, str] = {
    **dict.fromkeys(CLINICAL_DATE, "date"),
    # Types clinical-date leaves out, by the parameter that says when the care happened.
    "AdverseEvent": "date",
    "Appointment": "date",
    "ChargeItem": "occurrence",
    "Claim": "created",
    "ClaimResponse": "created",
    "Communication": "sent",
    "CommunicationRequest": "authored",
    "Condition": "onset-date",
    "DetectedIssue": "identified",
    "DeviceRequest": "authored-on",
    "DocumentManifest": "created",
    "DocumentReference": "period",
    "ExplanationOfBenefit": "created",
    "Goal": "start-date",
    "ImagingStudy": "started",
    "ImmunizationEvaluation": "date",
    "ImmunizationRecommendation": "date",
    "Invoice": "date",
    "Media": "created",
    "MedicationAdministration": "effective-time",
    "MedicationDispense": "whenhandedover",
    "MedicationRequest": "authoredon",
    "MedicationStatement": "effective",
    "NutritionOrder": "datetime",
    "QuestionnaireResponse": "authored",
    "RequestGroup": "authored",
    "ServiceRequest": "authored",
    "Specimen": "collected",
    "Task": "authored-on",
    "VisionPrescription": "datewritten",
}
"""Patient-compartment type -> the date search parameter ``start``/``end`` filter on.

Types not listed (Patient, RelatedPerson, Coverage, Account, AuditEvent, Provenance...)
record no care date and are returned whatever the window, as are the referenced resources
(Practitioner, Organization, Location, Medication...)."""
