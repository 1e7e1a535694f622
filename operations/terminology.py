"""``CodeSystem/$lookup``, ``$subsumes``, ``$validate-code`` and ``ValueSet/$validate-code``.

https://hl7.org/fhir/R4/terminology-service.html: each answers a ``Parameters`` resource from
what the terminology provider holds (``terminology.provider()``, the same object validation
asks on every write): ICD-10, UCUM and the FHIR R4 core code systems. ``ValueSet/$expand``
is in ``operations/expand.py``; both find value sets the same way (``find_value_set``).

Decisions where R4 leaves room:

- ``$lookup`` / ``$subsumes`` of a code system or code not held: 404 OperationOutcome, as
  HAPI answers (R4 says only "an error").
- ``$validate-code`` whose answer needs what is not held (a code of a fragment code system,
  a value set over SNOMED CT or LOINC): 422, rather than ``result`` false for a code that
  may well be valid.
- A ``display`` that is none of the code's displays makes ``result`` false, with the
  display the code system gives (compared case-insensitively).
"""

from __future__ import annotations

from typing import Any

from fhir_server.definitions.terminology import CodeCheck
from fhir_server.errors import BadRequest, NotFound
from fhir_server.services.operations import (
    Level,
    Operation,
    OperationCall,
    OperationRegistry,
    OperationServices,
    ResourceAnswer,
)
from operations import expand
from operations.terminology_definitions import (
    CODE_SYSTEM_VALIDATE_CODE,
    LOOKUP,
    SUBSUMES,
    VALUE_SET_VALIDATE_CODE,
)
from operations.terminology_parameters import (
    BAD_PARAMETERS,
    UNKNOWN_CODE,
    UNKNOWN_SYSTEM,
    Code,
    cannot_tell,
    codes_to_check,
    find_value_set,
    missing,
    one_code,
    parameters,
    part,
    unknown_system,
)
from terminology import provider, ucum
from terminology.codesystem import CodeSystem, Concept
from terminology.provider import shown
from terminology.valueset import ValueSet


def register(registry: OperationRegistry) -> None:
    type_level: frozenset[Level] = frozenset({"type"})
    registry.register(Operation(LOOKUP, lookup, levels=type_level))
    registry.register(Operation(SUBSUMES, subsumes, levels=type_level))
    registry.register(Operation(CODE_SYSTEM_VALIDATE_CODE, validate_in_code_system, type_level))
    both: frozenset[Level] = frozenset({"type", "instance"})
    registry.register(Operation(VALUE_SET_VALIDATE_CODE, validate_in_value_set, levels=both))
    expand.register(registry)


async def lookup(services: OperationServices, call: OperationCall) -> ResourceAnswer:
    """https://hl7.org/fhir/R4/codesystem-operation-lookup.html"""
    arguments = call.arguments
    given = one_code(arguments, "code", "system", "coding")
    if given is None or given.system is None:
        raise missing("$lookup needs system and code, or a coding with both", "system")
    held = _held(given.system, given.version or arguments.first("version"))
    concept = _concept(held, given.code)
    definition = concept.definition
    properties = [
        part("property", ("code", "valueCode", "definition"), ("value", "valueString", definition))
        if definition
        else None,
        *(_property("parent", parent) for parent in concept.parents),
        *(_property("child", child) for child in concept.children),
        *(
            part("property", ("code", "valueCode", item.code), ("value", item.key, item.value))
            for item in concept.properties
        ),
    ]
    designations = [
        part(
            "designation",
            ("language", "valueCode", each.language) if each.language else None,
            ("use", "valueCoding", dict(each.use)) if each.use else None,
            ("value", "valueString", each.value),
        )
        for each in concept.designations
    ]
    answer = parameters(
        ("name", "valueString", held.name),
        ("version", "valueString", held.version) if held.version else None,
        ("display", "valueString", concept.display or concept.code),
        *designations,
        *properties,
    )
    return ResourceAnswer(answer)


async def subsumes(services: OperationServices, call: OperationCall) -> ResourceAnswer:
    """https://hl7.org/fhir/R4/codesystem-operation-subsumes.html"""
    arguments = call.arguments
    first = one_code(arguments, "codeA", "system", "codingA")
    second = one_code(arguments, "codeB", "system", "codingB")
    if first is None or second is None:
        raise missing("$subsumes needs codeA and codeB (with system), or codingA and codingB")
    system = arguments.first("system") or first.system or second.system
    if system is None:
        raise missing("$subsumes needs the system of codeA and codeB", "system")
    for given, name in ((first, "codingA"), (second, "codingB")):
        if given.system not in (None, system):
            raise BadRequest(
                f"{name} is in {shown(given.system or '')}, not {shown(system)}: subsumption "
                "is tested within one code system",
                expression=name,
                rofecare_code=BAD_PARAMETERS,
            )
    held = _held(system, arguments.first("version") or first.version or second.version)
    a, b = _concept(held, first.code), _concept(held, second.code)
    if a is b:
        outcome = "equivalent"
    elif held.subsumes(a.code, b.code):
        outcome = "subsumes"
    elif held.subsumes(b.code, a.code):
        outcome = "subsumed-by"
    else:
        outcome = "not-subsumed"
    return ResourceAnswer(parameters(("outcome", "valueCode", outcome)))


async def validate_in_code_system(
    services: OperationServices, call: OperationCall
) -> ResourceAnswer:
    """https://hl7.org/fhir/R4/codesystem-operation-validate-code.html (type level)."""
    arguments = call.arguments
    url: str | None = arguments.first("url")
    if url is None:
        raise missing("CodeSystem/$validate-code needs url, the code system", "url")
    if url != ucum.SYSTEM:  # UCUM is a grammar: every code is checked, none is listed
        _held(url, arguments.first("version"))
    checks: list[CodeCheck | None] = []
    for given in codes_to_check(arguments, url):
        if given.system not in (None, url):
            checks.append(CodeCheck(False, f"{shown(given.system)} is not {shown(url)}"))
        else:
            checks.append(provider().validate_in_system(url, given.code, given.display))
    return ResourceAnswer(_validation(checks, f"the code system {shown(url)}"))


async def validate_in_value_set(services: OperationServices, call: OperationCall) -> ResourceAnswer:
    """https://hl7.org/fhir/R4/valueset-operation-validate-code.html: against a value set
    held here or stored (``ValueSet/[id]/$validate-code``, or its ``url``)."""
    arguments = call.arguments
    value_set = await find_value_set(services, call, "validate-code")
    system = arguments.first("system")
    checks = [
        _check(value_set, given, arguments.first("systemVersion"))
        for given in codes_to_check(arguments, system)
    ]
    return ResourceAnswer(_validation(checks, value_set.label))


def _check(value_set: ValueSet, given: Code, system_version: str | None) -> CodeCheck | None:
    version = given.version or system_version
    if given.system is not None and version is not None:
        held = provider().code_system(given.system)
        if held is not None and held.version and held.version != version:
            raise unknown_system(given.system, version)
    return provider().check_in(value_set, given.system, given.code, given.display)


def _validation(checks: list[CodeCheck | None], where: str) -> dict[str, Any]:
    """The answer for one code, or for the codings of a CodeableConcept: valid when one of
    them is; 422 when none is and some cannot be told."""
    valid = next((check for check in checks if check is not None and check.valid), None)
    if valid is not None:
        chosen = valid
    elif any(check is None for check in checks):
        raise cannot_tell(
            f"Whether the code is in {where} cannot be told here: it needs a code system "
            "this server does not hold completely"
        )
    else:
        found = [check for check in checks if check is not None]
        messages = "; ".join(check.message for check in found if check.message)
        chosen = CodeCheck(False, messages or None, next((c.display for c in found), None))
    return parameters(
        ("result", "valueBoolean", chosen.valid),
        ("message", "valueString", chosen.message) if chosen.message else None,
        ("display", "valueString", chosen.display) if chosen.display else None,
    )


def _held(system: str, version: str | None) -> CodeSystem:
    """The code system held under ``system`` (in ``version`` when given); 404 otherwise."""
    held = provider().code_system(system)
    if held is None and system == ucum.SYSTEM:
        raise NotFound(
            "UCUM is a grammar, not a list of codes: check a unit with "
            "CodeSystem/$validate-code?url=http://unitsofmeasure.org",
            rofecare_code=UNKNOWN_SYSTEM,
        )
    if held is None or (version is not None and held.version and version != held.version):
        raise unknown_system(system, version)
    return held


def _concept(held: CodeSystem, code: str) -> Concept:
    concept = held.get(code)
    if concept is None:
        raise NotFound(provider().unknown_code_message(held, code), rofecare_code=UNKNOWN_CODE)
    return concept


def _property(name: str, code: str) -> dict[str, Any]:
    return part("property", ("code", "valueCode", name), ("value", "valueCode", code))
