"""Realistic FHIR R4 Patients for the REST benchmark.

Why not one fixed body: a real hospital sends varied names, addresses and identifiers, and
body size and shape drive validation and serialisation cost. These Patients carry what a
registration desk records (a medical record number with its system, an official name,
gender, birth date, a home address, a phone and sometimes an e-mail), drawn from a seeded
random generator so every run sends the same data.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

MRN_SYSTEM = "https://rofecare.example.org/fhir/sid/mrn"
NATIONAL_ID_SYSTEM = "https://rofecare.example.org/fhir/sid/national-id"

_FEMALE = ["Amina", "Grace", "Fatuma", "Esther", "Mary", "Aisha", "Joyce", "Sarah", "Halima"]
_MALE = ["John", "Moses", "Hassan", "Peter", "Isaac", "Samuel", "Juma", "David", "Emmanuel"]
_FAMILY = [
    "Okello", "Mwangi", "Nakato", "Otieno", "Achieng", "Mugisha", "Kamau", "Namubiru",
    "Ssempala", "Wanjiru", "Hakizimana", "Banda", "Phiri", "Mensah", "Owusu", "Abdi",
]  # fmt: skip
_PLACES = [
    ("Kampala", "Kampala", "UG"),
    ("Gulu", "Gulu", "UG"),
    ("Mbarara", "Mbarara", "UG"),
    ("Nairobi", "Nairobi", "KE"),
    ("Kisumu", "Kisumu", "KE"),
    ("Arusha", "Arusha", "TZ"),
    ("Kigali", "Gasabo", "RW"),
]
_STREETS = ["Market Street", "Hospital Road", "Station Road", "Church Lane", "Lake View"]


def patient(rng: random.Random, number: int, resource_id: str | None = None) -> dict[str, Any]:
    """Patient number ``number``; with ``resource_id`` it is a body for PUT (ids must match)."""
    gender = rng.choice(["female", "male"])
    given = rng.sample(_FEMALE if gender == "female" else _MALE, 2)
    family = rng.choice(_FAMILY)
    city, district, country = rng.choice(_PLACES)
    birth = date(1940, 1, 1) + timedelta(days=rng.randrange(83 * 365))
    resource: dict[str, Any] = {"resourceType": "Patient"}
    if resource_id is not None:
        resource["id"] = resource_id
    resource.update(
        {
            "identifier": [
                {
                    "use": "usual",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                            }
                        ]
                    },
                    "system": MRN_SYSTEM,
                    "value": f"MRN-{number:07d}",
                },
                {"system": NATIONAL_ID_SYSTEM, "value": f"CM{rng.randrange(10**11):011d}"},
            ],
            "active": True,
            "name": [{"use": "official", "family": family, "given": given}],
            "telecom": [
                {
                    "system": "phone",
                    "value": f"+256 7{rng.randrange(10**8):08d}",
                    "use": "mobile",
                }
            ],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "address": [
                {
                    "use": "home",
                    "line": [f"{rng.randrange(1, 400)} {rng.choice(_STREETS)}"],
                    "city": city,
                    "district": district,
                    "postalCode": f"{rng.randrange(10**5):05d}",
                    "country": country,
                }
            ],
        }
    )
    if rng.random() < 0.5:
        email = f"{given[0].lower()}.{family.lower()}{number}@example.org"
        resource["telecom"].append({"system": "email", "value": email, "use": "home"})
    return resource
