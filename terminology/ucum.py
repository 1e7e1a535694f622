"""Is a code a UCUM unit? (``http://unitsofmeasure.org``, https://hl7.org/fhir/R4/ucum.html)

UCUM is a grammar, not a list: its value sets (``ucum-units``, ``ucum-vitals-common``...)
include the whole system, so membership is validity. The server's UCUM reader,
``fhir_server/search/ucum.py``, answers only "convertible to canonical units or not": it
returns None both for a code that is not UCUM and for a valid unit it does not convert
(the special units on non-ratio scales ``Cel/min``, ``[pH]``, ``dB``...; the rarely
clinical atoms it leaves out, ``[acr_us]``, ``[smoot]``...). Telling those apart here:
each symbol of the code that is such an atom (with a metric prefix where UCUM allows one)
is replaced by ``g`` and the rest of the code, whose syntax is unchanged, is given to the
reader again. The symbol scan follows the reader's own (its ``_Parser._symbol``): runs of
characters up to ``. / ( ) { } + -`` or a digit, ``[...]`` taken whole, ``{...}``
annotations skipped, ``10*`` / ``10^`` kept.

Atoms from ucum-essence.xml 2.2 (https://ucum.org/ucum): ``isSpecial="yes"`` and the ones
the reader's docstring lists as left out.
"""

from __future__ import annotations

import re

from fhir_server.search.ucum import canonical

SYSTEM = "http://unitsofmeasure.org"

# (atom, metric): metric atoms take the metric prefixes (dB, mCel, ktex).
_SPECIAL = {
    "Cel": True,
    "[degF]": False,
    "[degRe]": False,
    "[pH]": False,
    "[p'diop]": False,
    "%[slope]": False,
    "[hp'_X]": False,
    "[hp'_C]": False,
    "[hp'_M]": False,
    "[hp'_Q]": False,
    "B": True,
    "B[SPL]": True,
    "B[V]": True,
    "B[mV]": True,
    "B[uV]": True,
    "B[10.nV]": True,
    "B[W]": True,
    "B[kW]": True,
    "Np": True,
    "bit_s": False,
    "[m/s2/Hz^(1/2)]": False,
}
_LEFT_OUT_CODES = """
[rd_us] [ch_us] [lk_us] [rch_us] [rlk_us] [fth_us] [fur_us] [acr_us] [srd_us]
[smi_us] [sct] [twp] [mil_us] [in_br] [ft_br] [rd_br] [ch_br] [lk_br] [fth_br] [pc_br]
[yd_br] [mi_br] [nmi_br] [kn_br] [acr_br] [bu_us] [pk_us] [dqt_us] [dpt_us] [crd_us]
[lne] [pnt] [pca] [pnt_pr] [pca_pr] [pied] [pouce] [ligne] [didot] [cicero] [cr_i] [bf_i]
[cml_i] [smoot] [den]
"""
_ATOMS = {**_SPECIAL, **dict.fromkeys(_LEFT_OUT_CODES.split(), False), "tex": True}
_PREFIX_CODES = "Y Z E P T G M k h da d c m u n p f a z y Ki Mi Gi Ti"
_PREFIXES = sorted(_PREFIX_CODES.split(), key=len, reverse=True)  # "da" before "d"
_STOP = frozenset("./(){}+-0123456789")
_PLACEHOLDER = "g"
_MAX_CODE = 200
_TEN_POWER = re.compile(r"10[*^]")


def is_valid(code: str) -> bool:
    """Whether ``code`` is a UCUM expression (case-sensitive, as UCUM is)."""
    if not code or len(code) > _MAX_CODE or code != code.strip():
        return False
    if canonical(1.0, code) is not None:
        return True
    replaced = _replace_atoms(code)
    return replaced is not None and replaced != code and canonical(1.0, replaced) is not None


def _replace_atoms(code: str) -> str | None:
    """``code`` with each special or left-out atom replaced by the placeholder; None when
    a symbol is such an atom with a prefix it may not take, or brackets do not close."""
    out: list[str] = []
    position = 0
    while position < len(code):
        char = code[position]
        if char == "{":
            end = code.find("}", position)
            if end < 0:
                return None
            out.append(code[position : end + 1])
            position = end + 1
        elif _TEN_POWER.match(code, position):
            out.append(code[position : position + 3])
            position += 3
        elif char in _STOP:
            out.append(char)
            position += 1
        else:
            end = _symbol_end(code, position)
            if end < 0:
                return None
            symbol = _symbol(code[position:end])
            if symbol is None:
                return None
            out.append(symbol)
            position = end
    return "".join(out)


def _symbol_end(code: str, start: int) -> int:
    position = start
    while position < len(code) and code[position] not in _STOP:
        if code[position] == "[":
            position = code.find("]", position)
            if position < 0:
                return -1
        position += 1
    return position


def _symbol(symbol: str) -> str | None:
    """The placeholder for a special or left-out atom, the symbol itself otherwise."""
    if symbol in _ATOMS:
        return _PLACEHOLDER
    for prefix in _PREFIXES:
        if symbol.startswith(prefix) and symbol[len(prefix) :] in _ATOMS:
            return _PLACEHOLDER if _ATOMS[symbol[len(prefix) :]] else None
    return symbol
