"""Quantity parameters (search.html#quantity): [prefix][number]|[system]|[code].

The number part follows the number rules (implicit precision for eq/ne/ap, exact for the other
prefixes); ``system|code`` must both match, ``||code`` matches the code or the human unit in any
system, and a number alone ignores units. Converting between UCUM units is optional ("the
search processor may choose to perform a search based on canonical units"): those cases say
"UCUM" in their note, and the other fixture sets avoid units that a converting server would
compare differently.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, UCUM, Resource, SearchCase, observation, quantity

QUANTITY = f"{SPEC}#quantity"
NUMBER = f"{SPEC}#number"
PREFIX = f"{SPEC}#prefix"
MULTI = f"{SPEC}#combining"


def _obs(id_: str, value: float, code: str | None, system: str | None = UCUM) -> Resource:
    return observation(id_, valueQuantity=quantity(value, code, system))


UNITS = (
    _obs("q-mg-54", 5.4, "mg"),
    _obs("q-mg-544", 5.44, "mg"),
    _obs("q-mg-545", 5.45, "mg"),
    _obs("q-mg-53", 5.3, "mg"),
    _obs("q-g-54", 5.4, "g"),
    observation(
        "q-local-mg",
        valueQuantity={
            "value": 5.4,
            "unit": "milligram",
            "system": "http://example.org/units",
            "code": "mg",
        },
    ),
    observation("q-unit-only", valueQuantity={"value": 5.4, "unit": "mg"}),
    observation("q-string", valueString="5.4 mg"),
)

# Only UCUM milligrams, so comparisons give the same answer with or without unit conversion.
MILLIGRAMS = (
    _obs("qp-53", 5.3, "mg"),
    _obs("qp-54", 5.4, "mg"),
    _obs("qp-544", 5.44, "mg"),
    _obs("qp-545", 5.45, "mg"),
    _obs("qp-10", 10, "mg"),
)

GRAMS = (
    _obs("qe-00054", 0.0054, "g"),
    _obs("qe-00055", 0.0055, "g"),
    _obs("qe-54", 5.4, "g"),
)

MASSES = (
    _obs("qu-500mg", 500, "mg"),
    _obs("qu-1500mg", 1500, "mg"),
    _obs("qu-08g", 0.8, "g"),
    _obs("qu-2g", 2, "g"),
)

CONCENTRATIONS = (
    _obs("qm-5400umol", 5400, "umol/L"),
    _obs("qm-54mmol", 5.4, "mmol/L"),
    _obs("qm-56mmol", 5.6, "mmol/L"),
)

LENGTHS = (
    _obs("ql-15m", 1.5, "m"),
    _obs("ql-90cm", 90, "cm"),
    _obs("ql-05m", 0.5, "m"),
    _obs("ql-120cm", 120, "cm"),
)


def _mg_case(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, MILLIGRAMS, "Observation", query, expected, note=note)


CASES: tuple[SearchCase, ...] = (
    SearchCase(
        name="quantity-system-code",
        fixtures=UNITS,
        resource_type="Observation",
        query="value-quantity=5.4|http://unitsofmeasure.org|mg",
        expected=("q-mg-54", "q-mg-544"),
        note=f"5.4 UCUM mg is [5.35, 5.45) in UCUM mg: not 5.45, not a local 'mg' code, not a "
        f"unit-only 'mg', and 5.4 g is 5400 mg ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-code-any-system",
        fixtures=UNITS,
        resource_type="Observation",
        query="value-quantity=5.4||mg",
        expected=("q-mg-54", "q-mg-544", "q-local-mg", "q-unit-only"),
        note=f"number||code matches the code in any system or the human unit ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-number-only",
        fixtures=UNITS,
        resource_type="Observation",
        query="value-quantity=5.4",
        expected=("q-mg-54", "q-mg-544", "q-g-54", "q-local-mg", "q-unit-only"),
        note=f"a number alone matches any unit; a valueString is not a quantity ({QUANTITY})",
    ),
    _mg_case(
        "quantity-gt-exact",
        "value-quantity=gt5.4|http://unitsofmeasure.org|mg",
        ("qp-544", "qp-545", "qp-10"),
        f"gt ignores implicit precision: 5.44 mg > 5.4 mg ({QUANTITY}, {NUMBER})",
    ),
    _mg_case(
        "quantity-ge-exact",
        "value-quantity=ge5.4|http://unitsofmeasure.org|mg",
        ("qp-54", "qp-544", "qp-545", "qp-10"),
        f"ge includes 5.4 mg itself ({QUANTITY})",
    ),
    _mg_case(
        "quantity-lt-exact",
        "value-quantity=lt5.4|http://unitsofmeasure.org|mg",
        ("qp-53",),
        f"lt: strictly less than 5.4 mg ({QUANTITY})",
    ),
    _mg_case(
        "quantity-le-exact",
        "value-quantity=le5.4|http://unitsofmeasure.org|mg",
        ("qp-53", "qp-54"),
        f"le5.4: less than or equal to 5.4 mg exactly (the spec's example) ({QUANTITY})",
    ),
    _mg_case(
        "quantity-ne-implicit-range",
        "value-quantity=ne5.4|http://unitsofmeasure.org|mg",
        ("qp-53", "qp-545", "qp-10"),
        f"ne: outside [5.35, 5.45) mg ({QUANTITY}, {NUMBER})",
    ),
    _mg_case(
        "quantity-sa",
        "value-quantity=sa5.4|http://unitsofmeasure.org|mg",
        ("qp-544", "qp-545", "qp-10"),
        f"sa on point values: starts after 5.4 mg ({PREFIX})",
    ),
    _mg_case(
        "quantity-eb",
        "value-quantity=eb5.4|http://unitsofmeasure.org|mg",
        ("qp-53",),
        f"eb on point values: ends before 5.4 mg ({PREFIX})",
    ),
    _mg_case(
        "quantity-ap",
        "value-quantity=ap5.4|http://unitsofmeasure.org|mg",
        ("qp-53", "qp-54", "qp-544", "qp-545"),
        f"ap: about 5.4 mg (10% recommended; every match is within 2%, 10 mg is 85% off) "
        f"({PREFIX}, {QUANTITY})",
    ),
    _mg_case(
        "quantity-or",
        "value-quantity=5.4|http://unitsofmeasure.org|mg,10|http://unitsofmeasure.org|mg",
        ("qp-54", "qp-544", "qp-10"),
        f"OR of two quantities ({MULTI})",
    ),
    SearchCase(
        name="quantity-exponent-grams",
        fixtures=GRAMS,
        resource_type="Observation",
        query="value-quantity=5.40e-3|http://unitsofmeasure.org|g",
        expected=("qe-00054",),
        note=f"5.40e-3 g has three significant figures: [0.005395, 0.005405) g (the spec's "
        f"example) ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-ucum-lt-grams-matches-milligrams",
        fixtures=MASSES,
        resource_type="Observation",
        query="value-quantity=lt1|http://unitsofmeasure.org|g",
        expected=("qu-500mg", "qu-08g"),
        note=f"UCUM: 500 mg is 0.5 g < 1 g; 1500 mg is not; canonical-unit search is optional "
        f"in the spec ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-ucum-gt-milligrams-matches-grams",
        fixtures=MASSES,
        resource_type="Observation",
        query="value-quantity=gt1000|http://unitsofmeasure.org|mg",
        expected=("qu-1500mg", "qu-2g"),
        note=f"UCUM: 2 g is 2000 mg > 1000 mg; 0.8 g is 800 mg ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-ucum-eq-mmol-matches-umol",
        fixtures=CONCENTRATIONS,
        resource_type="Observation",
        query="value-quantity=5.4|http://unitsofmeasure.org|mmol/L",
        expected=("qm-5400umol", "qm-54mmol"),
        note=f"UCUM: 5400 umol/L is 5.4 mmol/L, inside [5.35, 5.45) mmol/L ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-ucum-eq-umol-matches-mmol",
        fixtures=CONCENTRATIONS,
        resource_type="Observation",
        query="value-quantity=5400|http://unitsofmeasure.org|umol/L",
        expected=("qm-5400umol", "qm-54mmol"),
        note=f"UCUM: the conversion works in both directions ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-ucum-length",
        fixtures=LENGTHS,
        resource_type="Observation",
        query="value-quantity=gt100|http://unitsofmeasure.org|cm",
        expected=("ql-15m", "ql-120cm"),
        note=f"UCUM: 1.5 m is 150 cm; 0.5 m and 90 cm are not above 100 cm ({QUANTITY})",
    ),
    SearchCase(
        name="quantity-and-over-several-values",
        fixtures=(
            {
                "resourceType": "Observation",
                "id": "bp-120-80",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                "component": [
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                        "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"},
                    },
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                        "valueQuantity": {"value": 80, "system": UCUM, "code": "mm[Hg]"},
                    },
                ],
            },
            {
                "resourceType": "Observation",
                "id": "bp-95-92",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                "component": [
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                        "valueQuantity": {"value": 95, "system": UCUM, "code": "mm[Hg]"},
                    },
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                        "valueQuantity": {"value": 92, "system": UCUM, "code": "mm[Hg]"},
                    },
                ],
            },
        ),
        resource_type="Observation",
        query="component-value-quantity=gt100&component-value-quantity=lt90",
        expected=("bp-120-80",),
        note=(
            "AND of repeated parameters: one value may satisfy each (120 > 100, 80 < 90), "
            f"so a multi-valued parameter is never read as one range ({QUANTITY})"
        ),
    ),
)
