"""Canonical UCUM forms for quantity search (https://hl7.org/fhir/R4/search.html#quantity).

Quantities written in commensurable units must land on the same (value, unit) pair, and
units that measure different things must not; anything unparseable gives None.
"""

from __future__ import annotations

import math

import pytest

from fhir_server.search import ucum
from fhir_server.search.ucum import canonical

# (value, code, value, code): the two quantities are equal.
EQUIVALENT = [
    (5.4, "mmol/L", 5400, "umol/L"),
    (1, "mmol/L", 1, "umol/mL"),
    (0.5, "g", 500, "mg"),
    (100, "mg/dL", 1, "g/L"),
    (1, "g/L", 1, "kg/m3"),
    (1, "mg/dL", 10, "mg/L"),
    (1, "g%", 1, "g/dL"),
    (1, "h", 60, "min"),
    (1, "min", 60, "s"),
    (1, "d", 24, "h"),
    (1, "wk", 7, "d"),
    (1, "a", 12, "mo"),
    (1, "a", 365.25, "d"),
    (72, "/min", 72, "{beats}/min"),
    (72, "/min", 72, "1/min"),
    (72, "/min", 1.2, "Hz"),
    (1, "s-1", 1, "Hz"),
    (1, "[lb_av]", 16, "[oz_av]"),
    (1, "[lb_av]", 453.59237, "g"),
    (1, "[ft_i]", 12, "[in_i]"),
    (1, "[in_i]", 2.54, "cm"),
    (1, "kg", 1000, "g"),
    (1, "t", 1, "Mg"),
    (1, "L", 1000, "mL"),
    (1, "l", 1, "L"),
    (1, "L", 1, "dm3"),
    (1, "mL", 1, "cm3"),
    (1, "dL", 100, "mL"),
    (1, "kPa", 1000, "Pa"),
    (1, "mm[Hg]", 133.322, "Pa"),
    (760, "mm[Hg]", 101.32472, "kPa"),
    (1, "cm[H2O]", 98.0665, "Pa"),
    (1, "kg.m/s2", 1, "N"),
    (1, "kg/(m.s2)", 1, "Pa"),
    (1, "m2", 10000, "cm2"),
    (1, "m+2", 1, "m2"),
    (50, "%", 0.5, "1"),
    (1, "[ppth]", 0.1, "%"),
    (3, "{score}", 3, "1"),
    (1, "[IU]/L", 1, "[iU]/L"),
    (1, "k[IU]/L", 1, "[IU]/mL"),
    (1, "meq/L", 1, "mmol/L"),
    (1, "mosm/kg", 1, "mmol/kg"),
    (1, "U/L", 1, "umol/min/L"),
    (1, "kat", 60e6, "U"),
    (4.5, "10*9/L", 4.5, "10*3/uL"),
    (4.5, "10^9/L", 4.5e9, "/L"),
    (4.5, "10*3{cells}/uL", 4.5, "10*3/uL"),
    (2, "mL{total}", 2, "mL"),
    (1, "mg/kg/d", 1, "mg/(kg.d)"),  # "/" and "." bind left to right
    (1, "mg/(24.h)", 1, "mg/d"),
    (1, "/100{WBCs}", 1, "%"),
    (37, "Cel", 310.15, "K"),
    (98.6, "[degF]", 37, "Cel"),
    (37, "Cel{body}", 37, "Cel"),
    (1, "KiBy", 1024, "By"),
]


@pytest.mark.parametrize(("left", "left_code", "right", "right_code"), EQUIVALENT)
def test_commensurable_units_land_on_the_same_pair(
    left: float, left_code: str, right: float, right_code: str
) -> None:
    first, second = canonical(left, left_code), canonical(right, right_code)
    assert first is not None and second is not None
    assert first[1] == second[1]
    assert first[0] == pytest.approx(second[0], rel=1e-12)


@pytest.mark.parametrize(
    ("value", "code", "expected", "unit"),
    [
        (1, "mg/dL", 10, "g.m-3"),
        (5.4, "mmol/L", 5.4, "mol.m-3"),
        (1, "mm[Hg]", 133322, "g.m-1.s-2"),
        (1, "Pa", 1000, "g.m-1.s-2"),
        (1, "N", 1000, "g.m.s-2"),
        (1, "/min", 1 / 60, "s-1"),
        (1, "%", 0.01, "1"),
        (1, "L", 0.001, "m3"),
        (1, "[IU]/L", 1000, "[iU].m-3"),
        (1, "U/L", 1 / 60 * 1e-3, "mol.m-3.s-1"),
        (1, "mol", 1, "mol"),
        (1, "eq", 1, "mol"),
        (4.5, "10*9/L", 4.5e12, "m-3"),
        (0, "Cel", 273.15, "K"),
        (32, "[degF]", 273.15, "K"),
        (1, "[arb'U]", 1, "[arb'U]"),
        (2, "sr", 2, "rad2"),
    ],
)
def test_canonical_value_and_unit(value: float, code: str, expected: float, unit: str) -> None:
    result = canonical(value, code)
    assert result is not None
    assert result[0] == pytest.approx(expected, rel=1e-12)
    assert result[1] == unit


def test_decimal_rescaling_is_exact() -> None:
    """Search for 5.4 mmol/L must find 5400 umol/L with a plain equality on the floats."""
    assert canonical(5400, "umol/L") == canonical(5.4, "mmol/L") == (5.4, "mol.m-3")
    assert canonical(0.0054, "mol/L") == (5.4, "mol.m-3")
    assert canonical(500, "mg") == (0.5, "g")


@pytest.mark.parametrize(
    ("prefix", "power"),
    [
        ("Y", 24), ("Z", 21), ("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3),
        ("h", 2), ("da", 1), ("d", -1), ("c", -2), ("m", -3), ("u", -6), ("n", -9),
        ("p", -12), ("f", -15), ("a", -18), ("z", -21), ("y", -24),
    ],
)  # fmt: skip
def test_metric_prefixes(prefix: str, power: int) -> None:
    assert canonical(1, f"{prefix}m") == (pytest.approx(10.0**power, rel=1e-15), "m")
    assert canonical(1, f"{prefix}mol") == (pytest.approx(10.0**power, rel=1e-15), "mol")


@pytest.mark.parametrize(
    ("code", "expected", "unit"),
    [
        ("m2", 1, "m2"),
        ("cm3", 1e-6, "m3"),
        ("mm2", 1e-6, "m2"),
        ("s-1", 1, "s-1"),
        ("s-2", 1, "s-2"),
        ("[in_i]2", 0.00064516, "m2"),
        ("10*3", 1e3, "1"),
        ("10*-3", 1e-3, "1"),
        ("10^6", 1e6, "1"),
        ("10*", 10, "1"),
        ("10*6/L", 1e9, "m-3"),
    ],
)
def test_exponents_and_powers_of_ten(code: str, expected: float, unit: str) -> None:
    assert canonical(1, code) == (pytest.approx(expected, rel=1e-15), unit)


@pytest.mark.parametrize("code", ["{beats}", "{score}", "1", "%", "[ppm]", "/[HPF]", "{a}.{b}"])
def test_annotations_and_pure_numbers_are_dimensionless(code: str) -> None:
    result = canonical(1, code)
    assert result is not None and result[1] == "1"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("g", "L"),
        ("g/L", "mol/L"),
        ("mmol/L", "10*9/L"),  # mol is kept apart from counts
        ("[IU]/L", "/L"),  # arbitrary units compare only with themselves
        ("[IU]", "[arb'U]"),
        ("[iU]", "1"),
        ("s", "m"),
        ("mm[Hg]", "mm"),
        ("Cel", "s"),
        ("J", "N"),
    ],
)
def test_non_commensurable_units_differ(left: str, right: str) -> None:
    first, second = canonical(1, left), canonical(1, right)
    assert first is not None and second is not None
    assert first[1] != second[1]


@pytest.mark.parametrize(
    "code",
    [
        "",
        "abc(",
        "m//s",
        "kg2x",
        "abc",
        "µg",  # the micro sign is not UCUM, only "u"
        "MG/DL",  # case matters: MG is megagauss, DL is nothing
        "Kg",
        "(m",
        "m)",
        "()",
        "(m.s)-1",  # an exponent applies to a simple unit, not to a parenthesis
        "m.",
        ".m",
        "/",
        "//min",
        "m/",
        "{",
        "{abc",
        "m{a}{b}",
        "m{é}",
        " mg",
        "mg ",
        "m g",
        "1e3",
        "10**3",
        "m-",
        "[in_i",
        "0",
        "/0",
        "10*400",
        "10*5000",
        "km999999999",
        "[pH]",  # special (non-ratio) units other than Cel and [degF]
        "dB",
        "Np",
        "Cel/min",  # offset units only stand alone
        "mCel",
        "Cel2",
        "[degF].m",
        "a" * 500,
    ],
)
def test_invalid_or_unsupported_codes_give_none(code: str) -> None:
    assert canonical(1, code) is None


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308])
def test_non_finite_results_give_none(value: float) -> None:
    assert canonical(value, "km") is None


@pytest.mark.parametrize(
    "code", ["mg/dL", "mm[Hg]", "U/L", "[IU]/L", "10*3/uL", "[lb_av]", "J", "%", "Cel"]
)
def test_canonical_unit_strings_are_ucum_and_canonical(code: str) -> None:
    """The canonical string parses back to itself with factor 1, so it is a fixed point."""
    first = canonical(1, code)
    assert first is not None
    assert canonical(7.5, first[1]) == (7.5, first[1])


def test_every_table_unit_resolves() -> None:
    """A typo in the unit table would silently make a unit unknown; catch it here."""
    unresolved = [code for code in sorted(ucum._ATOMS) if canonical(1, code) is None]
    assert unresolved == []


def test_results_are_cached_per_code() -> None:
    ucum._conversion.cache_clear()
    canonical(1, "mg/dL")
    canonical(2, "mg/dL")
    info = ucum._conversion.cache_info()
    assert (info.hits, info.misses) == (1, 1)
