"""The terminology provider: ICD-10, UCUM and the FHIR R4 core terminology behind one object.

It implements the core's hook (``fhir_server.definitions.terminology.Terminology``), which
validation asks on every write, and what the terminology operations need besides
(``operations/terminology.py``). Each source is loaded on its first use, under a lock, and
kept for the life of the process: ICD-10 (about 100 ms, 20 MB resident) when a question
names ICD-10, the core content (about 110 ms, 10 MB resident, 40 MB more while the Bundle
is parsed) when one names anything else; UCUM needs no loading. After that an answer is a
few dictionary lookups: ``validate_code`` takes 5 to 15 µs.

Value sets known here: the 673 R4 core ValueSets, Rofecare's own (``profiles/`` and the
ICD-10 diagnosis value set), and the implicit value sets of each code system known here:
``[system]?fhir_vs`` (all its codes) and ``[system]?fhir_vs=isa/[code]`` (the code and
its descendants). R4 defines that syntax for SNOMED CT
(https://hl7.org/fhir/R4/snomedct.html#implicit); terminology servers (Ontoserver,
Snowstorm, tx.fhir.org) apply it to other code systems, and R4 gives no other URL for
"all of ICD-10" (``CodeSystem.valueSet`` is whatever a code system names; LOINC's
``http://loinc.org/vs`` is LOINC's own). Canonical URLs may carry ``|version``
(https://hl7.org/fhir/R4/references.html#canonical); another version than the one held is
unknown.

Displays are compared case-insensitively: a display is a label for people, and R4 leaves
display case to each code system (https://hl7.org/fhir/R4/valueset-operation-validate-code.html).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from fhir_server.definitions.terminology import CodeCheck
from terminology import core, icd10, ucum
from terminology.codesystem import CodeSystem, Concept
from terminology.valueset import Membership, ValueSet

IMPLICIT = "?fhir_vs"


def split_canonical(canonical: str) -> tuple[str, str | None]:
    """``url|version`` -> (url, version); a bare URL has no version."""
    url, bar, version = canonical.partition("|")
    return url, (version if bar else None)


def shown(text: str, limit: int = 80) -> str:
    """Client text as it may appear in a message: bounded, never the whole input."""
    return text if len(text) <= limit else text[:limit] + "..."


class TerminologyProvider:
    """Code systems and value sets held in memory (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._icd10: CodeSystem | None = None
        self._core: core.PackagedContent | None = None
        self._value_sets: dict[str, ValueSet] = {}
        self._codes: dict[str, frozenset[tuple[str, str]] | None] = {}

    # -- what value sets need (terminology.valueset.Source) --------------------------------

    def code_system(self, url: str) -> CodeSystem | None:
        """The code system held under ``url`` (any ``content``); None when not held. UCUM
        is a grammar, not a list: it is checked by ``validate_in_system``, never held."""
        if url == icd10.SYSTEM:
            return self._icd10_system()
        if url == ucum.SYSTEM:
            return None
        return self._core_content().code_systems.get(url)

    def in_system(self, system: str, code: str) -> Membership:
        check = self.validate_in_system(system, code)
        return None if check is None else check.valid

    def value_set(self, canonical: str) -> ValueSet | None:
        """The compiled value set of ``url`` or ``url|version``; None when unknown."""
        url, version = split_canonical(canonical)
        found = self._value_sets.get(url)
        if found is None:
            resource = self._value_set_resource(url)
            if resource is None:
                return None  # not remembered: clients may send any number of URLs
            found = self._value_sets.setdefault(url, ValueSet(resource, self))
        return None if version is not None and version != found.version else found

    def compile(self, resource: Mapping[str, Any]) -> ValueSet:
        """A ValueSet resource that is not held here (a stored one), resolved against what
        is held: its imports must be value sets known here."""
        return ValueSet(resource, self)

    # -- the core's hook (fhir_server.definitions.terminology.Terminology) ------------------

    def knows_value_set(self, url: str) -> bool:
        return self.value_set(url) is not None

    def validate_code(
        self, value_set: str, system: str | None, code: str, display: str | None = None
    ) -> CodeCheck | None:
        found = self.value_set(value_set)
        return None if found is None else self.check_in(found, system, code, display)

    def check_in(
        self, value_set: ValueSet, system: str | None, code: str, display: str | None = None
    ) -> CodeCheck | None:
        """``validate_code`` against a compiled value set (a held or a stored one)."""
        if system is None:
            answers = {s: value_set.contains(s, code) for s in sorted(value_set.systems())}
            matching = [s for s, member in answers.items() if member]
            if not matching:
                if None in answers.values() or not answers:
                    return None
                only = next(iter(answers)) if len(answers) == 1 else None
                return self._not_in(value_set, only, code)
            system = matching[0]
        member = value_set.contains(system, code)
        if member is None:
            return None
        if not member:
            return self._not_in(value_set, system, code)
        concept = self._concept(system, code)
        preferred = (concept.display if concept else None) or value_set.declared_display(
            system, code
        )
        allowed = concept.displays() if concept else set()
        if preferred:
            allowed.add(preferred.casefold())
        return _display_check(system, code, display, preferred, allowed)

    def validate_in_system(
        self, system: str, code: str, display: str | None = None
    ) -> CodeCheck | None:
        url, version = split_canonical(system)
        if url == ucum.SYSTEM:
            if ucum.is_valid(code):
                return CodeCheck(True)
            return CodeCheck(False, f"{shown(code)!r} is not a valid UCUM unit")
        held = self.code_system(url)
        if held is None or (version is not None and version != held.version):
            return None
        concept = held.get(code)
        if concept is None:
            if not held.complete:
                return None  # a fragment or an example cannot refuse a code
            return CodeCheck(False, self.unknown_code_message(held, code))
        return _display_check(url, concept.code, display, concept.display, concept.displays())

    def value_set_codes(self, value_set: str) -> frozenset[tuple[str, str]] | None:
        found = self.value_set(value_set)
        if found is None or found.url is None:
            return None
        if found.url not in self._codes:
            entries = found.expansion()
            self._codes[found.url] = (
                None if entries is None else frozenset((e.system, e.code) for e in entries)
            )
        return self._codes[found.url]

    def descendants(self, system: str, code: str) -> frozenset[str] | None:
        held = self.code_system(system)
        return held.descendants(code) if held is not None and held.hierarchical else None

    def ancestors(self, system: str, code: str) -> frozenset[str] | None:
        held = self.code_system(system)
        return held.ancestors(code) if held is not None and held.hierarchical else None

    # -- messages --------------------------------------------------------------------------

    @staticmethod
    def unknown_code_message(held: CodeSystem, code: str) -> str:
        message = f"{shown(code)!r} is not a code of {held.name} ({held.url})"
        hint = icd10.hint(held, code) if held.url == icd10.SYSTEM else None
        return f"{message}; did you mean {hint!r}?" if hint else message

    def _not_in(self, value_set: ValueSet, system: str | None, code: str) -> CodeCheck:
        """Why ``code`` is not in the value set: not a code of its system at all, or a code
        the value set does not take."""
        if system is None:
            return CodeCheck(
                False, f"{shown(code)!r} is in none of the code systems of {value_set.label}"
            )
        check = self.validate_in_system(system, code)
        if check is not None and not check.valid:
            return CodeCheck(False, check.message)
        return CodeCheck(False, f"{shown(system)}|{shown(code)} is not in {value_set.label}")

    # -- loading ---------------------------------------------------------------------------

    def _concept(self, system: str, code: str) -> Concept | None:
        held = self.code_system(system)
        return held.get(code) if held is not None else None

    def _value_set_resource(self, url: str) -> Mapping[str, Any] | None:
        if url == icd10.DIAGNOSIS_VALUE_SET:
            return icd10.DIAGNOSIS
        system, implicit, rule = url.partition(IMPLICIT)
        if implicit:
            return self._implicit(system, rule)
        return self._core_content().value_sets.get(url)

    def _implicit(self, system: str, rule: str) -> Mapping[str, Any] | None:
        """``[system]?fhir_vs`` (every code) or ``[system]?fhir_vs=isa/[code]`` of a code
        system known here; only for a code it holds, so that remembering the value sets
        clients name stays bounded."""
        held = self.code_system(system)
        include: dict[str, Any] = {"system": system}
        if rule:
            isa = rule.startswith("=isa/") and held is not None
            top = held.get(rule.removeprefix("=isa/")) if isa and held is not None else None
            if top is None:
                return None
            include["filter"] = [{"property": "concept", "op": "is-a", "value": top.code}]
            name = f"{top.display or top.code} and its descendants"
        elif held is None and system != ucum.SYSTEM:
            return None
        else:
            name = f"All codes of {held.name if held else 'UCUM'}"
        return {
            "resourceType": "ValueSet",
            "url": system + IMPLICIT + rule,
            "version": held.version if held else None,
            "name": name,
            "status": "active",
            "compose": {"include": [include]},
        }

    def _icd10_system(self) -> CodeSystem:
        if self._icd10 is None:
            with self._lock:  # two threads asking first load it once
                if self._icd10 is None:
                    self._icd10 = icd10.load()
        return self._icd10

    def _core_content(self) -> core.PackagedContent:
        if self._core is None:
            with self._lock:
                if self._core is None:
                    self._core = core.load()
        return self._core


def _display_check(
    system: str, code: str, display: str | None, preferred: str | None, allowed: set[str]
) -> CodeCheck:
    """Valid, unless ``display`` is given, displays are known, and it is none of them."""
    if display is None or not allowed or display.casefold() in allowed:
        return CodeCheck(True, display=preferred)
    return CodeCheck(
        False,
        f"{shown(display)!r} is not a display of {shown(code)} in {shown(system)}; "
        f"expected {preferred!r}",
        display=preferred,
    )
