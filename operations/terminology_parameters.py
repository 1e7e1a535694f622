"""What the terminology operations share: the value set and codes they are given, their
errors, their answers.

A value set is named by the instance (``ValueSet/[id]/$expand``: a stored ValueSet) or by
``url`` (with ``valueSetVersion`` or ``url|version``): one held by the terminology provider,
else a stored ValueSet with that url. A stored ValueSet is resolved against what the
provider holds (its imported value sets must be held ones).

A code reaches ``$lookup``, ``$subsumes`` and ``$validate-code`` in one of three forms
(https://hl7.org/fhir/R4/valueset-operation-validate-code.html): ``code`` (+ ``system``),
a ``Coding``, or a ``CodeableConcept``, exactly one of which must be given. The shared
parser has checked primitive values; a Coding or CodeableConcept arrives as the JSON object
of the Parameters body and is checked here (that ``code`` is a string, and so on), so a
malformed one is a 400 naming its path, never a 500.

Stable error codes ``rofecare-47NN``; the status follows what FHIR servers do: 404 for a
code system, code or value set not held here (HAPI answers ``$lookup`` of an unknown code
404), 422 when the server holds the question but cannot answer it (a code of a system held
only as a fragment, a value set over SNOMED CT), 400 for the request itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_server.errors import BadRequest, NotFound, Unprocessable
from fhir_server.services.operation_parameters import MAX_VALUE_LENGTH, Arguments
from fhir_server.services.operations import OperationCall, OperationServices
from terminology import provider as terminology_provider
from terminology.provider import shown, split_canonical
from terminology.valueset import ValueSet

BAD_PARAMETERS = "rofecare-4701"  # a parameter is missing, or the parameters disagree
MALFORMED = "rofecare-4702"  # a Coding or CodeableConcept that is not one
UNKNOWN_SYSTEM = "rofecare-4703"  # the code system (or that version of it) is not held
UNKNOWN_CODE = "rofecare-4704"  # $lookup / $subsumes of a code the code system lacks
UNKNOWN_VALUE_SET = "rofecare-4705"  # no value set with that url (and version)
CANNOT_TELL = "rofecare-4706"  # held, but the answer needs what is not held here
TOO_MANY = "rofecare-4707"  # an expansion larger than MAX_EXPANSION without count
NOT_ENUMERABLE = "rofecare-4708"  # $expand of a value set whose codes are not all held
BAD_FILTER = "rofecare-4709"  # an $expand filter too long or of too many words
BAD_PAGE = "rofecare-4710"  # a negative offset or count
AMBIGUOUS = "rofecare-4711"  # several stored ValueSets share the url: version needed
MAX_CODINGS = 20
"""Codings of one CodeableConcept looked at; a concept carries a handful of translations."""


class TooCostly(BadRequest):
    """The answer would be too large to return at once (issue type too-costly)."""

    issue_type = "too-costly"


@dataclass(frozen=True)
class Code:
    """One code to look at: ``system`` None for a bare ``code`` whose system is implied."""

    system: str | None
    code: str
    display: str | None = None
    version: str | None = None


def missing(message: str, expression: str | None = None) -> BadRequest:
    return BadRequest(message, expression=expression, rofecare_code=BAD_PARAMETERS)


def unknown_system(system: str, version: str | None = None) -> NotFound:
    held = f" version {shown(version)}" if version else ""
    return NotFound(
        f"The code system {shown(system)}{held} is not held by this server",
        rofecare_code=UNKNOWN_SYSTEM,
    )


def cannot_tell(message: str) -> Unprocessable:
    return Unprocessable(message, rofecare_code=CANNOT_TELL)


async def find_value_set(
    services: OperationServices, call: OperationCall, operation: str
) -> ValueSet:
    """The value set of the call: the stored ValueSet of ``ValueSet/[id]/$...``, else the
    one of ``url`` (``valueSetVersion`` or ``url|version``), held here or stored."""
    arguments = call.arguments
    terminology = terminology_provider()
    if call.resource_id is not None:
        stored = await services.resources.read("ValueSet", call.resource_id)
        assert stored.body is not None  # read returns a current, undeleted version
        return terminology.compile(orjson.loads(stored.body))
    canonical: str | None = arguments.first("url")
    if canonical is None:
        raise missing(f"ValueSet/${operation} needs url, the value set", "url")
    url, version = split_canonical(canonical)
    version = arguments.first("valueSetVersion") or version
    held = terminology.value_set(f"{url}|{version}" if version else url)
    if held is not None:
        return held
    pairs = [("url", url), ("_count", "2")] + ([("version", version)] if version else [])
    found = (await services.search.search(("ValueSet",), pairs)).page.matches
    if len(found) > 1:
        raise BadRequest(
            f"Several stored ValueSets have url {shown(url)}: give valueSetVersion",
            expression="url",
            rofecare_code=AMBIGUOUS,
        )
    if not found or found[0].body is None:
        held_as = f" version {shown(version)}" if version else ""
        raise NotFound(
            f"No value set {shown(url)}{held_as} is known here", rofecare_code=UNKNOWN_VALUE_SET
        )
    resource: dict[str, Any] = orjson.loads(found[0].body)
    return terminology.compile(resource)


def one_code(arguments: Arguments, code: str, system: str, coding: str) -> Code | None:
    """The code given as ``code`` + ``system`` or as a Coding (None when neither is)."""
    given = arguments.first(code)
    found = arguments.first(coding)
    if given is not None and found is not None:
        raise missing(f"Give {code} (with {system}) or {coding}, not both", coding)
    if found is not None:
        return read_coding(found, coding)
    if given is None:
        return None
    return Code(arguments.first(system), given)


def codes_to_check(arguments: Arguments, system: str | None) -> list[Code]:
    """The codes of ``$validate-code``: ``code`` (in ``system``), a ``coding``, or each
    coding of a ``codeableConcept``; exactly one of the three."""
    forms = [name for name in ("code", "coding", "codeableConcept") if arguments.first(name)]
    if len(forms) != 1:
        raise missing(
            "Give exactly one of code, coding or codeableConcept"
            + (f" (got {', '.join(forms)})" if forms else ""),
            forms[1] if len(forms) > 1 else "code",
        )
    if forms[0] == "code":
        return [Code(system, arguments.first("code"), arguments.first("display"))]
    if forms[0] == "coding":
        found = read_coding(arguments.first("coding"), "coding")
        display = arguments.first("display") or found.display
        return [Code(found.system, found.code, display, found.version)]
    return list(_concept_codings(arguments.first("codeableConcept")))


def read_coding(value: Any, path: str) -> Code:
    """A Coding object (https://hl7.org/fhir/R4/datatypes.html#Coding) with a code."""
    if not isinstance(value, dict):
        raise _malformed(f"{path} must be a Coding object", path)
    code = value.get("code")
    if not isinstance(code, str) or not code.strip():
        raise _malformed(f"{path}.code must be a non-empty string", f"{path}.code")
    fields: dict[str, str | None] = {}
    for name in ("system", "display", "version"):
        item = value.get(name)
        if item is not None and not isinstance(item, str):
            raise _malformed(f"{path}.{name} must be a string", f"{path}.{name}")
        fields[name] = item
    for name, item in (("code", code), *fields.items()):
        if item is not None and len(item) > MAX_VALUE_LENGTH:
            raise _malformed(f"{path}.{name} is longer than {MAX_VALUE_LENGTH}", f"{path}.{name}")
    return Code(fields["system"], code, fields["display"], fields["version"])


def _concept_codings(value: Any) -> Iterator[Code]:
    if not isinstance(value, dict):
        raise _malformed("codeableConcept must be a CodeableConcept object", "codeableConcept")
    codings = value.get("coding")
    if not isinstance(codings, list) or not codings:
        raise _malformed("codeableConcept.coding must hold codings", "codeableConcept.coding")
    if len(codings) > MAX_CODINGS:
        raise _malformed(
            f"codeableConcept holds more than {MAX_CODINGS} codings", "codeableConcept.coding"
        )
    for index, coding in enumerate(codings):
        yield read_coding(coding, f"codeableConcept.coding[{index}]")


def _malformed(message: str, path: str) -> BadRequest:
    return BadRequest(message, expression=path, rofecare_code=MALFORMED)


def parameters(*items: tuple[str, str, Any] | dict[str, Any] | None) -> dict[str, Any]:
    """A Parameters resource from ``(name, value[x] key, value)`` triples and ready parts;
    None items (absent optional outputs) are left out."""
    parameter: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, tuple):
            name, key, value = item
            parameter.append({"name": name, key: value})
        elif item is not None:
            parameter.append(item)
    return {"resourceType": "Parameters", "parameter": parameter}


def part(name: str, *items: tuple[str, str, Any] | None) -> dict[str, Any]:
    """A parameter made of parts (https://hl7.org/fhir/R4/parameters.html)."""
    return {"name": name, "part": parameters(*items)["parameter"]}
