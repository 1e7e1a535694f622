"""Token modifiers answered by the terminology: ``:in``, ``:not-in``, ``:below``, ``:above``.

https://hl7.org/fhir/R4/search.html#token: ``code:in=[value set url]`` matches a code in
the value set, ``:not-in`` one that is not, ``code:below=system|code`` the code and every
code it subsumes, ``:above`` the code and every code subsuming it. The terminology
expands each into the codes it stands for, and the plan asks for any of them, so every
backend answers them with the token index it already has. A value set or hierarchy the
terminology cannot enumerate is a 400, never an empty (wrong) answer.
"""

from __future__ import annotations

from fhir_server.definitions.terminology import Terminology
from fhir_server.errors import BadRequest
from fhir_server.search.plan import IdMatch, Not, Predicate, TokenMatch
from fhir_server.search.tokens import split_escaped, unescape

MODIFIERS = frozenset({"in", "not-in", "below", "above"})
MAX_CODES = 2_000  # a larger expansion is a question for a narrower value set or :below
NOTHING = IdMatch(("",))  # no resource has an empty id: an empty value set matches nothing


def terminology_predicates(
    name: str, code: str, modifier: str, values: list[str], terminology: Terminology | None
) -> tuple[Predicate, ...]:
    if terminology is None:
        raise _bad(name, f"the :{modifier} modifier needs a terminology service", "rofecare-2131")
    codes: set[tuple[str | None, str]] = set()
    for value in values:
        codes |= _codes(
            name, modifier, unescape(value) if modifier in ("in", "not-in") else value, terminology
        )
    if len(codes) > MAX_CODES // 2:
        raise _bad(
            name,
            f":{modifier} stands for {len(codes)} codes, more than {MAX_CODES // 2}; narrow it",
            "rofecare-2133",
        )
    # A ``code`` element (Patient.gender) is indexed without a system, its system being
    # the binding's: for a value set such an entry matches by its code alone ("|code",
    # search.html#token). :below and :above name their system, and keep to it.
    bound = modifier in ("in", "not-in")
    matches: tuple[Predicate, ...] = tuple(
        TokenMatch(code, system, item)
        for pair in sorted(codes, key=str)
        for system, item in ((pair, ("", pair[1])) if bound else (pair,))
    ) or (NOTHING,)
    if modifier == "not-in":
        return (Not(matches),)
    return matches


def _codes(
    name: str, modifier: str, value: str, terminology: Terminology
) -> set[tuple[str | None, str]]:
    if modifier in ("in", "not-in"):
        expansion = terminology.value_set_codes(value)
        if expansion is None:
            raise _bad(
                name,
                f"the value set {value[:200]!r} is unknown or cannot be expanded",
                "rofecare-2132",
            )
        return set(expansion)
    parts = [unescape(part) for part in split_escaped(value, "|")]
    if len(parts) != 2 or not all(parts):
        raise _bad(name, f":{modifier} needs system|code, not {value[:60]!r}", "rofecare-2134")
    system, code = parts
    related = (
        terminology.descendants(system, code)
        if modifier == "below"
        else terminology.ancestors(system, code)
    )
    if related is None:
        raise _bad(name, f"{system[:100]}|{code[:40]} has no hierarchy known here", "rofecare-2132")
    return {(system, item) for item in related}


def _bad(name: str, message: str, code: str) -> BadRequest:
    return BadRequest(f"Search parameter {name!r}: {message}", rofecare_code=code)
