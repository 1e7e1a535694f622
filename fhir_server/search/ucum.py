"""UCUM unit codes to one canonical form, so quantity search compares across units.

FHIR R4 quantity search (https://hl7.org/fhir/R4/search.html#quantity) lets a server match
``5.4|http://unitsofmeasure.org|mmol/L`` against 5400 umol/L. The indexer stores every UCUM
Quantity as ``canonical(value, code)`` and the search value is converted the same way, so
comparisons happen on a (value, unit) pair in UCUM base units.

This is a compact reading of UCUM 2.2 (https://ucum.org/ucum): its syntax rules (``.``
and ``/`` left to right, integer exponents, parentheses, a leading ``/``, integer factors,
``{annotations}`` counting as 1, ``10*n`` / ``10^n``), the metric prefixes and the binary
ones Ki Mi Gi Ti, and the ratio units of ucum-essence.xml that clinical data uses.
Codes are case-sensitive; the micro sign is not UCUM, only ``u``. It is written by hand
because the libraries on PyPI were not good enough for the write path (ucumvert brings pint,
lark and 0.7 s of start-up, about 0.9 ms per code, and makes ``[IU]`` dimensionless;
ucumate starts a Java 21 JVM in the process).

Choices, where UCUM leaves room or a strict reading would mislead search:

* ``mol`` is kept as its own base dimension instead of 6.02214076e23 (a pure number), so
  mmol/L never matches a count like 10*9/L. ``eq`` and ``osm`` are 1 mol, as UCUM says.
* Arbitrary units (``[iU]``, ``[arb'U]``, ``[CFU]`` ...) are each their own dimension, since
  UCUM says they compare with nothing but themselves; ``[IU]`` is the same as ``[iU]``.
* ``Cel`` and ``[degF]`` are converted with their offset to ``K``, but only as the whole
  code (an annotation may follow). In a product (``Cel/min``), with a prefix or an
  exponent, they give None, as do the other special units: ``[pH]``, ``B``/``dB`` and the
  bel family, ``Np``, ``[p'diop]``, ``%[slope]``, ``[hp'_X]`` and kin, ``bit_s``, ``[degRe]``.
  The mapping is increasing, so bounds convert one by one; an ``ap`` range taken as a
  percentage must be worked out before converting, not on kelvins.
* Left out as rarely clinical: US survey and British lengths except foot/inch/yard/mile,
  typesetting units, ``[cr_i]``, ``[bf_i]``, ``[cml_i]``, ``[crd_us]``, dry US volumes,
  ``[smoot]``, ``tex``, ``[den]``. Unknown codes give None.

Canonical unit strings are themselves UCUM: base atoms ``g m s rad K C cd mol`` then
arbitrary units in code order, positive exponents before negative ones, joined by ``.``
(``g.m-3``, ``mol.m-3.s-1``, ``[iU].m-3``); a pure number is ``1``, so ``%``, ``{score}``
and ``[ppm]`` all land there, and annotations never tell units apart.

Precision: the factor of a code is worked out exactly in decimal (34 digits) and rounded to
a float once. A factor that is a power of ten (prefixes, ``10*n``, L, %) is applied with one
float multiplication or division by an exact power, so the result is the correctly rounded
decimal: 5400 umol/L and 5.4 mmol/L both give exactly ``5.4``. Any other factor (mm[Hg],
[lb_av], min) adds one rounding, so results agree to about 1e-16 relative, not always to the
last bit: range comparisons are safe, bit-exact equality across such units is not.
"""

from __future__ import annotations

import math
import re
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from functools import cache, lru_cache
from typing import NamedTuple

__all__ = ["canonical", "is_valid"]

# Base units in the order they are written in a canonical string.
_BASES = ("g", "m", "s", "rad", "K", "C", "cd", "mol")
# fmt: off
_PREFIXES = {
    "Y": 24, "Z": 21, "E": 18, "P": 15, "T": 12, "G": 9, "M": 6, "k": 3, "h": 2, "da": 1,
    "d": -1, "c": -2, "m": -3, "u": -6, "n": -9, "p": -12, "f": -15, "a": -18, "z": -21,
    "y": -24,
}
# fmt: on
_BINARY_PREFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}
_PREFIX_ORDER = sorted((*_PREFIXES, *_BINARY_PREFIXES), key=len, reverse=True)  # "da" before "d"
# Arbitrary units: each is its own dimension ([IU] is read as [iU]).
_ARBITRARY_CODES = """
[iU] [arb'U] [USP'U] [GPL'U] [MPL'U] [APL'U] [beth'U] [anti'Xa'U] [todd'U] [dye'U] [smgy'U]
[bdsk'U] [ka'U] [knk'U] [mclg'U] [tb'U] [CCID_50] [TCID_50] [EID_50] [PFU] [FFU] [CFU] [IR]
[BAU] [AU] [Amb'a'1'U] [PNU] [Lf] [D'ag'U] [FEU] [ELU] [EU] [hp_X] [hp_C] [hp_M] [hp_Q]
[kp_X] [kp_C] [kp_M] [kp_Q]
"""
_ARBITRARY = frozenset(_ARBITRARY_CODES.split())
_METRIC_ARBITRARY = frozenset({"[iU]"})

# From ucum-essence.xml 2.2: "code value unit" entries separated by ";". "M:" lines hold
# metric units (they take prefixes), "-:" lines the others.
_TABLE = """
-: 10* 10 1; 10^ 10 1; [pi] 3.14159265358979323846 1; % 1 10*-2; [ppth] 1 10*-3
-: [ppm] 1 10*-6; [ppb] 1 10*-9; [pptr] 1 10*-12
M: sr 1 rad2; Hz 1 s-1; N 1 kg.m/s2; Pa 1 N/m2; J 1 N.m; W 1 J/s; A 1 C/s; V 1 J/C
M: F 1 C/V; Ohm 1 V/A; S 1 Ohm-1; Wb 1 V.s; T 1 Wb/m2; H 1 Wb/A; lm 1 cd.sr; lx 1 lm/m2
M: Bq 1 s-1; Gy 1 J/kg; Sv 1 J/kg; l 1 dm3; L 1 l; ar 100 m2; t 1e3 kg; bar 1e5 Pa
M: u 1.66053906660e-24 g; eV 1 [e].V; pc 3.085678e16 m; [c] 299792458 m/s
M: [h] 6.62607015e-34 J.s; [k] 1.380649e-23 J/K; [eps_0] 8.854187817e-12 F/m
M: [mu_0] 1 4.[pi].10*-7.N/A2; [e] 1.602176634e-19 C; [m_e] 9.1093837139e-31 kg
M: [m_p] 1.67262192595e-27 kg; [G] 6.67430e-11 m3.kg-1.s-2; [g] 980665e-5 m/s2
M: [ly] 1 [c].a_j; gf 1 g.[g]; Ky 1 cm-1; Gal 1 cm/s2; dyn 1 g.cm/s2; erg 1 dyn.cm
M: P 1 dyn.s/cm2; Bi 10 A; St 1 cm2/s; Mx 1e-8 Wb; G 1e-4 T; Oe 250 /[pi].A/m; Gb 1 Oe.cm
M: sb 1 cd/cm2; Lmb 1 cd/cm2/[pi]; ph 1e-4 lx; Ci 37e9 Bq; R 2.58e-4 C/kg; RAD 100 erg/g
M: REM 1 RAD; cal_[15] 4.18580 J; cal_[20] 4.18190 J; cal_m 4.19002 J; cal_IT 4.1868 J
M: cal_th 4.184 J; cal 1 cal_th; m[H2O] 980665e-5 kPa; m[Hg] 133.3220 kPa; eq 1 mol
M: osm 1 mol; g% 1 g/dl; kat 1 mol/s; U 1 umol/min; st 1 m3; mho 1 S; bit 1 1; By 8 bit
M: Bd 1 /s
-: gon 0.9 deg; deg 2 [pi].rad/360; ' 1 deg/60; '' 1 '/60; min 60 s; h 60 min; d 24 h
-: a_t 365.24219 d; a_j 365.25 d; a_g 365.2425 d; a 1 a_j; wk 7 d; mo_s 29.53059 d
-: mo_j 1 a_j/12; mo_g 1 a_g/12; mo 1 mo_j; AU 149597.870691 Mm; atm 101325 Pa
-: [lbf_av] 1 [lb_av].[g]; [in_i] 254e-2 cm; [ft_i] 12 [in_i]; [yd_i] 3 [ft_i]
-: [mi_i] 5280 [ft_i]; [fth_i] 6 [ft_i]; [nmi_i] 1852 m; [kn_i] 1 [nmi_i]/h
-: [sin_i] 1 [in_i]2; [sft_i] 1 [ft_i]2; [syd_i] 1 [yd_i]2; [cin_i] 1 [in_i]3
-: [cft_i] 1 [ft_i]3; [cyd_i] 1 [yd_i]3; [mil_i] 1e-3 [in_i]; [hd_i] 4 [in_i]
-: [ft_us] 1200 m/3937; [in_us] 1 [ft_us]/12; [yd_us] 3 [ft_us]; [mi_us] 5280 [ft_us]
-: [gal_us] 231 [in_i]3; [bbl_us] 42 [gal_us]; [qt_us] 1 [gal_us]/4; [pt_us] 1 [qt_us]/2
-: [gil_us] 1 [pt_us]/4; [foz_us] 1 [gil_us]/4; [fdr_us] 1 [foz_us]/8
-: [min_us] 1 [fdr_us]/60; [tbs_us] 1 [foz_us]/2; [tsp_us] 1 [tbs_us]/3
-: [cup_us] 16 [tbs_us]; [foz_m] 30 mL; [cup_m] 240 mL; [tsp_m] 5 mL; [tbs_m] 15 mL
-: [gal_br] 4.54609 l; [qt_br] 1 [gal_br]/4; [pt_br] 1 [qt_br]/2; [gil_br] 1 [pt_br]/4
-: [foz_br] 1 [gil_br]/5; [fdr_br] 1 [foz_br]/8; [min_br] 1 [fdr_br]/60
-: [gr] 64.79891 mg; [lb_av] 7000 [gr]; [oz_av] 1 [lb_av]/16; [dr_av] 1 [oz_av]/16
-: [scwt_av] 100 [lb_av]; [lcwt_av] 112 [lb_av]; [ston_av] 20 [scwt_av]
-: [lton_av] 20 [lcwt_av]; [stone_av] 14 [lb_av]; [pwt_tr] 24 [gr]; [oz_tr] 20 [pwt_tr]
-: [lb_tr] 12 [oz_tr]; [sc_ap] 20 [gr]; [dr_ap] 3 [sc_ap]; [oz_ap] 8 [dr_ap]
-: [lb_ap] 12 [oz_ap]; [oz_m] 28 g; [degR] 5 K/9; [Cal] 1 kcal_th; [Btu_39] 1.05967 kJ
-: [Btu_59] 1.05480 kJ; [Btu_60] 1.05468 kJ; [Btu_m] 1.05587 kJ; [Btu_th] 1.054350 kJ
-: [Btu_IT] 1.05505585262 kJ; [Btu] 1 [Btu_th]; [HP] 550 [ft_i].[lbf_av]/s
-: [in_i'H2O] 1 m[H2O].[in_i]/m; [in_i'Hg] 1 m[Hg].[in_i]/m; [PRU] 1 mm[Hg].s/ml
-: [wood'U] 1 mm[Hg].min/L; [diop] 1 /m; [mesh_i] 1 /[in_i]; [Ch] 1 mm/3; [drp] 1 ml/20
-: [hnsf'U] 1 1; [MET] 3.5 mL/min/kg; [S] 1 10*-13.s; [HPF] 1 1; [LPF] 100 1
-: Ao 0.1 nm; b 100 fm2; att 1 kgf/cm2; [psi] 1 [lbf_av]/[in_i]2; circ 2 [pi].rad
-: sph 4 [pi].sr; [car_m] 2e-1 g; [car_Au] 1 /24; [NTU] 1 1; [FNU] 1 1
"""


def _read_table(table: str) -> dict[str, tuple[str, str, bool]]:
    """code -> (value, unit expression, metric)."""
    entries: dict[str, tuple[str, str, bool]] = {}
    for line in table.strip().splitlines():
        flag, _, rest = line.partition(": ")
        for entry in rest.split("; "):
            code, value, unit = entry.split(" ")
            entries[code] = (value, unit, flag == "M")
    return entries


_DEFINED = _read_table(_TABLE)
_ATOMS = frozenset({*_BASES, *_ARBITRARY, "[IU]", *_DEFINED})
# Valid atoms that are not converted (atom -> metric): UCUM's special units on non-ratio
# scales (ucum-essence.xml 2.2 isSpecial="yes") and the rarely clinical ones left out above.
# They make a code valid for the terminology (``is_valid``), never convertible.
_UNCONVERTED_METRIC = "Cel B B[SPL] B[V] B[mV] B[uV] B[10.nV] B[W] B[kW] Np tex"
_UNCONVERTED_OTHER = """
[degF] [degRe] [pH] [p'diop] %[slope] [hp'_X] [hp'_C] [hp'_M] [hp'_Q] bit_s [m/s2/Hz^(1/2)]
[rd_us] [ch_us] [lk_us] [rch_us] [rlk_us] [fth_us] [fur_us] [acr_us] [srd_us] [smi_us] [sct]
[twp] [mil_us] [in_br] [ft_br] [rd_br] [ch_br] [lk_br] [fth_br] [pc_br] [yd_br] [mi_br]
[nmi_br] [kn_br] [acr_br] [bu_us] [pk_us] [dqt_us] [dpt_us] [crd_us] [lne] [pnt] [pca]
[pnt_pr] [pca_pr] [pied] [pouce] [ligne] [didot] [cicero] [cr_i] [bf_i] [cml_i] [smoot] [den]
"""
_UNCONVERTED = {
    **{atom: True for atom in _UNCONVERTED_METRIC.split(" ")},
    **{atom: False for atom in _UNCONVERTED_OTHER.split()},
}
# Cel and [degF] alone (an annotation may follow): value * scale + offset in kelvins.
_TEMPERATURE = re.compile(r"(Cel|\[degF\])(\{[ -z|~]*\})?")  # printable ASCII but braces
_TEMPERATURES = {"Cel": (1.0, 273.15), "[degF]": (5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0)}
# Factors are multiplied exactly (34 digits, enough for every UCUM constant) and rounded to
# a float once; an out-of-range or undefined result raises instead of going to inf or NaN.
_EXACT = Context(prec=34, Emax=999, Emin=-999, traps=[InvalidOperation, DivisionByZero, Overflow])
_ONE = Decimal(1)
_MAX_CODE = 200  # longer codes are not units anyone writes; refusing them bounds the work


class _Invalid(ValueError):
    """The code is not a UCUM expression this module understands."""


class _Term:
    """A parsed unit: an exact decimal factor times base units to integer powers."""

    __slots__ = ("dims", "factor")

    def __init__(self, factor: Decimal = _ONE, dims: dict[str, int] | None = None):
        self.factor = factor
        self.dims = dims or {}

    def times(self, other: _Term) -> _Term:
        dims = dict(self.dims)
        for base, power in other.dims.items():
            dims[base] = dims.get(base, 0) + power
        return _Term(_EXACT.multiply(self.factor, other.factor), dims)

    def power(self, n: int) -> _Term:
        if n == 1:
            return self
        dims = {base: power * n for base, power in self.dims.items()}
        return _Term(_EXACT.power(self.factor, n), dims)


def _decimal(text: str) -> _Term:
    """A decimal literal from the table or an integer factor of a code; zero is no unit."""
    factor = Decimal(text)
    if not factor > 0:
        raise _Invalid(text)
    return _Term(factor)


def _atom(code: str, lenient: bool = False) -> tuple[_Term, bool] | None:
    """A unit atom without prefix, and whether it is metric; None when unknown."""
    if code in _ATOMS:
        return _known_atom(code)
    if lenient and code in _UNCONVERTED:
        return _Term(dims={code: 1}), _UNCONVERTED[code]
    return None


@cache  # bounded by the table: only known atoms reach it
def _known_atom(code: str) -> tuple[_Term, bool]:
    if code in _BASES:
        return _Term(dims={code: 1}), True
    if code in _ARBITRARY or code == "[IU]":
        key = "[iU]" if code == "[IU]" else code
        return _Term(dims={key: 1}), key in _METRIC_ARBITRARY
    value, unit, metric = _DEFINED[code]
    return _decimal(value).times(_Parser(unit).parse()), metric


def _simple_unit(symbol: str, lenient: bool = False) -> _Term:
    """An atom, or a metric atom after a prefix; an exact atom wins (``cd``, ``Pa``).
    ``lenient``: an unconverted atom counts too, as a dimension of its own."""
    found = _atom(symbol, lenient)
    if found is not None:
        return found[0]
    for prefix in _PREFIX_ORDER:
        if symbol.startswith(prefix):
            rest = _atom(symbol[len(prefix) :], lenient)
            if rest is not None and rest[1]:
                if prefix in _BINARY_PREFIXES:
                    return _Term(_BINARY_PREFIXES[prefix]).times(rest[0])
                return _Term(_ONE.scaleb(_PREFIXES[prefix])).times(rest[0])
    raise _Invalid(symbol)


class _Parser:
    """Recursive descent over the UCUM syntax: mainTerm ::= "/" term | term;
    term ::= component (("." | "/") component)*, left to right."""

    _STOP = frozenset("./(){}+-0123456789")

    def __init__(self, text: str, lenient: bool = False):
        self.text = text
        self.pos = 0
        self.lenient = lenient

    def parse(self) -> _Term:
        leading_slash = self.text.startswith("/")
        self.pos = int(leading_slash)
        term = self._term()
        if self.pos != len(self.text):
            raise _Invalid(self.text)
        return term.power(-1) if leading_slash else term

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _term(self) -> _Term:
        term = self._component()
        while (operator := self._peek()) in (".", "/"):
            self.pos += 1
            component = self._component()
            term = term.times(component if operator == "." else component.power(-1))
        return term

    def _component(self) -> _Term:
        char = self._peek()
        if char == "(":
            self.pos += 1
            term = self._term()
            if self._peek() != ")":
                raise _Invalid(self.text)
            self.pos += 1
            return term
        if char == "{":
            self._annotation()
            return _Term()
        if char.isdigit():
            start = self.pos
            while self._peek().isdigit():
                self.pos += 1
            digits = self.text[start : self.pos]
            if digits == "10" and self._peek() in ("*", "^"):  # the atoms 10* and 10^
                self.pos += 1
                term = _simple_unit("10*").power(self._exponent())
            else:  # an integer factor; a trailing annotation is tolerated (/100{WBCs})
                term = _decimal(digits)
        elif char and char not in self._STOP:
            term = _simple_unit(self._symbol(), self.lenient).power(self._exponent())
        else:
            raise _Invalid(self.text)
        if self._peek() == "{":
            self._annotation()
        return term

    def _symbol(self) -> str:
        start = self.pos
        while (char := self._peek()) and char not in self._STOP:
            if char == "[":  # brackets hold any characters, digits and "/" included
                end = self.text.find("]", self.pos)
                if end < 0:
                    raise _Invalid(self.text)
                self.pos = end
            self.pos += 1
        return self.text[start : self.pos]

    def _exponent(self) -> int:
        start = self.pos
        if self._peek() in ("+", "-"):
            self.pos += 1
        while self._peek().isdigit():
            self.pos += 1
        text = self.text[start : self.pos]
        if not text:
            return 1
        if not text[-1].isdigit():
            raise _Invalid(self.text)
        return int(text)

    def _annotation(self) -> None:
        """Skip ``{...}``: printable ASCII (space tolerated), no nested braces."""
        end = self.text.find("}", self.pos)
        body = self.text[self.pos + 1 : end]
        if end < 0 or "{" in body or not all(" " <= c <= "~" for c in body):
            raise _Invalid(self.text)
        self.pos = end + 1


class _Conversion(NamedTuple):
    """``canonical = value * scale / divisor + offset``, in ``unit``.

    A pure power of ten up to 10**22 (exact as a float) is applied as one multiplication or
    division, so the result is the correctly rounded decimal; anything else is ``scale``.
    """

    scale: float
    divisor: float
    offset: float
    unit: str


def _unit_string(dims: dict[str, int]) -> str:
    def order(item: tuple[str, int]) -> tuple[bool, int, str]:
        base, power = item
        rank = _BASES.index(base) if base in _BASES else len(_BASES)
        return power < 0, rank, base

    parts = [b if p == 1 else f"{b}{p}" for b, p in sorted(dims.items(), key=order) if p]
    return ".".join(parts) or "1"


@lru_cache(maxsize=4096)
def _conversion(code: str) -> _Conversion | None:
    """The cached, value-independent part of :func:`canonical`; None when not convertible."""
    if not code or len(code) > _MAX_CODE:
        return None
    if special := _TEMPERATURE.fullmatch(code):
        scale, offset = _TEMPERATURES[special.group(1)]
        return _Conversion(scale, 1.0, offset, "K")
    try:
        term = _Parser(code).parse()
    except (_Invalid, ArithmeticError, RecursionError):  # DivisionByZero, Overflow: not a unit
        return None
    unit = _unit_string(term.dims)
    _, digits, exponent = term.factor.normalize(_EXACT).as_tuple()
    if digits == (1,) and isinstance(exponent, int) and abs(exponent) <= 22:
        power = float(10 ** abs(exponent))
        return (
            _Conversion(1.0, power, 0.0, unit)
            if exponent < 0
            else _Conversion(power, 1.0, 0.0, unit)
        )
    scale = float(term.factor)
    if not (math.isfinite(scale) and scale > 0.0):
        return None
    return _Conversion(scale, 1.0, 0.0, unit)


def canonical(value: float, code: str) -> tuple[float, str] | None:
    """(value in canonical units, canonical unit string), or None when `code` is not a
    UCUM expression this module understands.

    Used on both sides of quantity search (https://hl7.org/fhir/R4/search.html#quantity):
    the indexer for stored Quantities with system http://unitsofmeasure.org, the query
    parser for each bound of the search value. Never raises; a non-finite result is None.
    """
    conversion = _conversion(code)
    if conversion is None:
        return None
    result = value
    if conversion.scale != 1.0:
        result *= conversion.scale
    if conversion.divisor != 1.0:
        result /= conversion.divisor
    result += conversion.offset
    if not math.isfinite(result):
        return None
    return result, conversion.unit


def is_valid(code: str) -> bool:
    """Whether ``code`` is a UCUM expression (case-sensitive, as UCUM is), converted or
    not: the terminology's answer for ``http://unitsofmeasure.org``, which is a grammar
    rather than a list. ``canonical`` alone cannot tell, since it gives None both for a
    code that is no unit and for a valid one it does not convert (``Cel/min``, ``[pH]``)."""
    if not code or len(code) > _MAX_CODE or code != code.strip():
        return False
    if _conversion(code) is not None:
        return True
    try:
        _Parser(code, lenient=True).parse()
    except (_Invalid, ArithmeticError, RecursionError):
        return False
    return True
