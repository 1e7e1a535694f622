"""Number parameters (search.html#number): implicit precision, exponents, prefixes, integers.

A search value without prefix (or with eq, ne, ap) is a range set by its significant figures:
``100`` is [99.5, 100.5), ``100.00`` is [99.995, 100.005), ``1e2`` has one figure (the spec
says [95, 105), its significant-figure rule gives [50, 150); the cases hold under both).
With gt, lt, ge, le, sa, eb the precision is ignored and the value is exact. Stored decimals are
compared as points (the table of search.html#number speaks of "values in the range"), which also
is HAPI FHIR's reading. Against an integer element a value without exponent and without non-zero
decimals is an exact match.

Numbers are read from JSON as exact decimals: 0.85 must fall on the excluded upper bound of
``0.8`` = [0.75, 0.85), which binary floating point would get wrong.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, Resource, SearchCase, ref

NUMBER = f"{SPEC}#number"
PREFIX = f"{SPEC}#prefix"
MULTI = f"{SPEC}#combining"


def _risk(id_: str, *probabilities: float) -> Resource:
    prediction: list[Resource] = [{"probabilityDecimal": p} for p in probabilities]
    if not probabilities:
        prediction = [{"qualitativeRisk": {"text": "low"}}]
    return {
        "resourceType": "RiskAssessment",
        "id": id_,
        "status": "final",
        "subject": ref("Patient/p1"),
        "prediction": prediction,
    }


def _charge(id_: str, factor: float | int) -> Resource:
    return {
        "resourceType": "ChargeItem",
        "id": id_,
        "status": "billable",
        "code": {"text": "consultation"},
        "subject": ref("Patient/p1"),
        "factorOverride": factor,
    }


def _sequence(id_: str, window_start: int) -> Resource:
    return {
        "resourceType": "MolecularSequence",
        "id": id_,
        "coordinateSystem": 0,
        "referenceSeq": {"windowStart": window_start, "windowEnd": window_start + 500},
    }


RISKS = (
    _risk("ra-079", 0.79),
    _risk("ra-08", 0.8),
    _risk("ra-0849", 0.849),
    _risk("ra-085", 0.85),
    _risk("ra-09", 0.9),
    _risk("ra-multi", 0.1, 0.95),
    _risk("ra-none"),
)

APPROX_RISKS = (_risk("ra-ap-08", 0.8), _risk("ra-ap-081", 0.81), _risk("ra-ap-04", 0.4))

FACTORS = (
    _charge("ci-949", 94.9),
    _charge("ci-95", 95),
    _charge("ci-994", 99.4),
    _charge("ci-995", 99.5),
    _charge("ci-100", 100),
    _charge("ci-1004", 100.4),
    _charge("ci-1005", 100.5),
    _charge("ci-1049", 104.9),
    _charge("ci-105", 105),
)

# The spec's 1e2 example says [95, 105) while its significant-figure rule gives [50, 150): the
# exponent cases only use values on the same side of both readings.
EXPONENT_FACTORS = (
    _charge("ce-45", 45),
    _charge("ce-95", 95),
    _charge("ce-100", 100),
    _charge("ce-1049", 104.9),
    _charge("ce-160", 160),
)

SEQUENCES = (
    _sequence("ms-40", 40),
    _sequence("ms-96", 96),
    _sequence("ms-100", 100),
    _sequence("ms-101", 101),
    _sequence("ms-160", 160),
)


def _risk_case(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, RISKS, "RiskAssessment", query, expected, note=note)


def _factor_case(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, FACTORS, "ChargeItem", query, expected, note=note)


def _sequence_case(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, SEQUENCES, "MolecularSequence", query, expected, note=note)


CASES: tuple[SearchCase, ...] = (
    _risk_case(
        "number-eq-implicit-range",
        "probability=0.8",
        ("ra-079", "ra-08", "ra-0849"),
        f"0.8 has one significant figure: [0.75, 0.85); 0.85 is the excluded upper bound "
        f"({NUMBER})",
    ),
    _risk_case(
        "number-eq-more-figures",
        "probability=0.80",
        ("ra-08",),
        f"0.80 has two significant figures: [0.795, 0.805) excludes 0.79 and 0.849 ({NUMBER})",
    ),
    _risk_case(
        "number-gt-exact",
        "probability=gt0.8",
        ("ra-0849", "ra-085", "ra-09", "ra-multi"),
        f"gt ignores implicit precision: strictly above 0.8 exactly (0.849 included) ({NUMBER})",
    ),
    _risk_case(
        "number-gt-exponent",
        "probability=gt8e-1",
        ("ra-0849", "ra-085", "ra-09", "ra-multi"),
        f"the spec's own example: gt0.8 could also be written gt8e-1 ({NUMBER})",
    ),
    _risk_case(
        "number-ge-exact",
        "probability=ge0.8",
        ("ra-08", "ra-0849", "ra-085", "ra-09", "ra-multi"),
        f"ge: 0.8 itself and above ({NUMBER})",
    ),
    _risk_case(
        "number-lt-exact",
        "probability=lt0.8",
        ("ra-079", "ra-multi"),
        f"lt: strictly below 0.8; ra-multi has a prediction of 0.1 ({NUMBER})",
    ),
    _risk_case(
        "number-le-exact",
        "probability=le0.8",
        ("ra-079", "ra-08", "ra-multi"),
        f"le: 0.8 itself and below ({NUMBER})",
    ),
    _risk_case(
        "number-ne-implicit-range",
        "probability=ne0.8",
        ("ra-085", "ra-09", "ra-multi"),
        f"ne: outside [0.75, 0.85); ra-none has no probability and does not match ({NUMBER})",
    ),
    _risk_case(
        "number-sa-exact",
        "probability=sa0.8",
        ("ra-0849", "ra-085", "ra-09", "ra-multi"),
        f"sa on a decimal point value: starts after 0.8, precision ignored ({NUMBER}, {PREFIX})",
    ),
    _risk_case(
        "number-eb-exact",
        "probability=eb0.8",
        ("ra-079", "ra-multi"),
        f"eb on a decimal point value: ends before 0.8 ({NUMBER}, {PREFIX})",
    ),
    _risk_case(
        "number-or",
        "probability=0.8,0.9",
        ("ra-079", "ra-08", "ra-0849", "ra-085", "ra-09"),
        f"OR of [0.75, 0.85) and [0.85, 0.95); 0.95 is outside both ({MULTI})",
    ),
    _risk_case(
        "number-and-on-repeating-element",
        "probability=lt0.2&probability=gt0.9",
        ("ra-multi",),
        f"AND applies to the resource: one prediction satisfies each value ({MULTI})",
    ),
    SearchCase(
        name="number-ap",
        fixtures=APPROX_RISKS,
        resource_type="RiskAssessment",
        query="probability=ap0.8",
        expected=("ra-ap-08", "ra-ap-081"),
        note=f"ap: within about 10% of 0.8; 0.4 is far outside any reasonable tolerance ({PREFIX})",
    ),
    _factor_case(
        "number-eq-integer-form",
        "factor-override=100",
        ("ci-995", "ci-100", "ci-1004"),
        f"100 means [99.5, 100.5): 99.5 is in, 100.5 is out (the spec's first example) ({NUMBER})",
    ),
    _factor_case(
        "number-eq-five-figures",
        "factor-override=100.00",
        ("ci-100",),
        f"100.00 means [99.995, 100.005) ({NUMBER})",
    ),
    SearchCase(
        name="number-eq-exponent-one-figure",
        fixtures=EXPONENT_FACTORS,
        resource_type="ChargeItem",
        query="factor-override=1e2",
        expected=("ce-95", "ce-100", "ce-1049"),
        note=f"1e2 has one significant figure, a wider range than 100: 95 and 104.9 match. The "
        f"spec says [95, 105) but its own rule gives [50, 150); 45 and 160 are outside both "
        f"({NUMBER})",
    ),
    _factor_case(
        "number-eq-exponent-three-figures",
        "factor-override=1.00e2",
        ("ci-995", "ci-100", "ci-1004"),
        f"1.00e2 has three significant figures, like 100 ({NUMBER})",
    ),
    _factor_case(
        "number-ne-integer-form",
        "factor-override=ne100",
        ("ci-949", "ci-95", "ci-994", "ci-1005", "ci-1049", "ci-105"),
        f"ne100: outside [99.5, 100.5) ({NUMBER})",
    ),
    _factor_case(
        "number-lt-integer-form",
        "factor-override=lt100",
        ("ci-949", "ci-95", "ci-994", "ci-995"),
        f"lt100: less than exactly 100 ({NUMBER})",
    ),
    _factor_case(
        "number-le-integer-form",
        "factor-override=le100",
        ("ci-949", "ci-95", "ci-994", "ci-995", "ci-100"),
        f"le100: less or equal to exactly 100 ({NUMBER})",
    ),
    _factor_case(
        "number-gt-integer-form",
        "factor-override=gt100",
        ("ci-1004", "ci-1005", "ci-1049", "ci-105"),
        f"gt100: greater than exactly 100, so 100.4 matches although it 'equals' 100 ({NUMBER})",
    ),
    _factor_case(
        "number-ge-integer-form",
        "factor-override=ge100",
        ("ci-100", "ci-1004", "ci-1005", "ci-1049", "ci-105"),
        f"ge100: greater or equal to exactly 100 ({NUMBER})",
    ),
    _sequence_case(
        "number-integer-exact",
        "window-start=100",
        ("ms-100",),
        f"against an integer element, 100 is an exact match ({NUMBER}, notes)",
    ),
    _sequence_case(
        "number-integer-decimal-zero",
        "window-start=100.0",
        ("ms-100",),
        f"100.0 has no non-zero decimals: still exact against integers ({NUMBER}, notes)",
    ),
    _sequence_case(
        "number-integer-fraction-no-match",
        "window-start=100.5",
        (),
        f"non-zero digits after the decimal point: no integer can match ({NUMBER}, notes)",
    ),
    _sequence_case(
        "number-integer-exponent-range",
        "window-start=1e2",
        ("ms-96", "ms-100", "ms-101"),
        f"the exponential form keeps its implicit range even against integers; 40 and 160 are "
        f"outside both readings of 1e2 ([95, 105) or [50, 150)) ({NUMBER}, notes)",
    ),
    _sequence_case(
        "number-integer-gt",
        "window-start=gt100",
        ("ms-101", "ms-160"),
        f"gt on an integer element ({NUMBER})",
    ),
)
