"""The R4 OperationDefinitions of the terminology operations, as this server implements them.

Canonical URLs are the official ones (https://hl7.org/fhir/R4/terminology-service.html);
the ``in`` parameters are those implemented, so the shared parser takes exactly these and
reports any other (``date``, ``displayLanguage``, ``property``, ``activeOnly``...) as
ignored. Resource-typed inputs (``valueSet``, ``codeSystem``: a definition sent in the
request) are not taken: the value set or code system is named by ``url`` or by the
instance. Descriptions condense https://hl7.org/fhir/R4/codesystem-operation-lookup.html,
codesystem-operation-subsumes.html, codesystem-operation-validate-code.html,
valueset-operation-validate-code.html and valueset-operation-expand.html.
"""

from __future__ import annotations

from typing import Any


def _in(name: str, kind: str, documentation: str, maximum: str = "1") -> dict[str, Any]:
    return {
        "name": name,
        "use": "in",
        "min": 0,
        "max": maximum,
        "type": kind,
        "documentation": documentation,
    }


def _out(name: str, kind: str, minimum: int, documentation: str) -> dict[str, Any]:
    return {
        "name": name,
        "use": "out",
        "min": minimum,
        "max": "1",
        "type": kind,
        "documentation": documentation,
    }


def _definition(
    resource: str, code: str, title: str, instance: bool, parameters: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "resourceType": "OperationDefinition",
        "id": f"{resource}-{code}",
        "url": f"http://hl7.org/fhir/OperationDefinition/{resource}-{code}",
        "version": "4.0.1",
        "name": title.replace(" ", ""),
        "title": title,
        "status": "active",
        "kind": "operation",
        "affectsState": False,
        "code": code,
        "resource": [resource],
        "system": False,
        "type": True,
        "instance": instance,
        "parameter": parameters,
    }


_VALIDATE_RESULT = [
    _out("result", "boolean", 1, "True if the concept details supplied are valid."),
    _out("message", "string", 0, "Why the code is not valid, or a warning."),
    _out("display", "string", 0, "The display the code system gives the code."),
]

LOOKUP = _definition(
    "CodeSystem",
    "lookup",
    "Concept Look Up",
    False,
    [
        _in("code", "code", "The code to look up; needs system."),
        _in("system", "uri", "The code system of the code."),
        _in("version", "string", "The code system version; another than the one held is 404."),
        _in("coding", "Coding", "The coding to look up (instead of system and code)."),
        _out("name", "string", 1, "The name of the code system."),
        _out("version", "string", 0, "The version of the code system held."),
        _out("display", "string", 1, "The display of the code."),
        {
            **_out("designation", "BackboneElement", 0, "Further displays of the code."),
            "max": "*",
        },
        {
            **_out("property", "BackboneElement", 0, "parent, child and the other properties."),
            "max": "*",
        },
    ],
)
LOOKUP["description"] = (
    "Given a system and code (or a Coding), the concept's display, designations and "
    "properties, including its parent and child codes in a hierarchical code system. "
    "An unknown code system or code is 404."
)

SUBSUMES = _definition(
    "CodeSystem",
    "subsumes",
    "Subsumption Testing",
    False,
    [
        _in("codeA", "code", "The code A (needs system)."),
        _in("codeB", "code", "The code B (needs system)."),
        _in("system", "uri", "The code system of codeA and codeB."),
        _in("version", "string", "The code system version."),
        _in("codingA", "Coding", "Code A as a Coding (instead of codeA)."),
        _in("codingB", "Coding", "Code B as a Coding (instead of codeB)."),
        _out("outcome", "code", 1, "equivalent | subsumes | subsumed-by | not-subsumed"),
    ],
)
SUBSUMES["description"] = (
    "Whether code A subsumes code B in the code system's hierarchy (for ICD-10, the WHO "
    "classification: chapter, block, category, subcategory)."
)

CODE_SYSTEM_VALIDATE_CODE = _definition(
    "CodeSystem",
    "validate-code",
    "Code System based Validation",
    False,
    [
        _in("url", "uri", "The code system (required)."),
        _in("version", "string", "The code system version."),
        _in("code", "code", "The code to check."),
        _in("display", "string", "A display to check against the code's displays."),
        _in("coding", "Coding", "The coding to check (instead of code)."),
        _in("codeableConcept", "CodeableConcept", "Valid when one of its codings is."),
        *_VALIDATE_RESULT,
    ],
)
CODE_SYSTEM_VALIDATE_CODE["description"] = (
    "Whether a code is a code of the code system. A code system held only as a fragment "
    "or an example cannot refuse a code it does not list: 422."
)

VALUE_SET_VALIDATE_CODE = _definition(
    "ValueSet",
    "validate-code",
    "Value Set based Validation",
    True,
    [
        _in("url", "uri", "The value set (type level; url|version is accepted)."),
        _in("valueSetVersion", "string", "The value set version."),
        _in("code", "code", "The code to check."),
        _in("system", "uri", "The code system of code (without it, any of the value set's)."),
        _in("systemVersion", "string", "The code system version."),
        _in("display", "string", "A display to check against the code's displays."),
        _in("coding", "Coding", "The coding to check (instead of code and system)."),
        _in("codeableConcept", "CodeableConcept", "Valid when one of its codings is."),
        *_VALIDATE_RESULT,
    ],
)
VALUE_SET_VALIDATE_CODE["description"] = (
    "Whether a code is in the value set: a value set held by the server (url), or a "
    "ValueSet stored here (its id, or its url). Over code systems not held here (SNOMED "
    "CT, LOINC...) the answer is unknown: 422."
)

EXPAND = _definition(
    "ValueSet",
    "expand",
    "Value Set Expansion",
    True,
    [
        _in("url", "uri", "The value set (type level; url|version is accepted)."),
        _in("valueSetVersion", "string", "The value set version."),
        _in("filter", "string", "Only codes whose code or display holds every word given."),
        _in("offset", "integer", "Where the page starts (default 0)."),
        _in("count", "integer", "How many codes the page holds."),
        _out("return", "ValueSet", 1, "The value set with its expansion (a page of it)."),
    ],
)
EXPAND["description"] = (
    "The codes of a value set, filtered and paged: expansion.total counts every match, "
    "expansion.offset and the count parameter say which page this is. An expansion of more "
    "codes than the server returns at once needs count (and offset) or a narrower filter."
)
