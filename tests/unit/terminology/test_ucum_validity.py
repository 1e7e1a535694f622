"""UCUM validity: the quantity reader's None is split into "not UCUM" and "special unit"."""

from __future__ import annotations

import pytest

from terminology.ucum import is_valid

VALID = [
    "mg",
    "mmol/L",
    "10*3/uL",
    "10^3",
    "{score}",
    "%",
    "[IU]/L",
    "/min",
    "1/min",
    "kg.m/s2",
    "mm[Hg]",
    "mg{dry}/dL",
    # special units on non-ratio scales: the quantity reader does not convert them
    "Cel",
    "Cel/min",
    "mCel",
    "[degF]",
    "[pH]",
    "dB",
    "dB[mV]",
    "B[10.nV]",
    "Np",
    "cNp",
    "bit_s",
    "%[slope]",
    # atoms the quantity reader leaves out as rarely clinical
    "[acr_us]",
    "[smoot]/h",
    "ktex",
]
INVALID = [
    "",
    "foo",
    "mg/",
    "mg ",
    " mg",
    "µg",  # the micro sign is not UCUM, u is
    "(m",
    "m)",
    "g{abc",
    "[in_i",
    "m[pH]",  # [pH] takes no prefix
    "k[acr_us]",
    "kbit_s",
    "KG",  # UCUM is case-sensitive: kg is a unit, KG is not
    "m" * 201,
]


@pytest.mark.parametrize("code", VALID)
def test_valid(code: str) -> None:
    assert is_valid(code)


@pytest.mark.parametrize("code", INVALID)
def test_invalid(code: str) -> None:
    assert not is_valid(code)
