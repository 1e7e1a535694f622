"""Operation arguments, parsed and checked against the OperationDefinition that declares them.

https://hl7.org/fhir/R4/operations.html#request: an operation takes its ``in`` parameters
from the URL (GET, or POST with a form) or from a ``Parameters`` resource (POST). Either
way the names, types and cardinalities are those of the OperationDefinition, so one parser
serves every operation and none re-implements "is this an instant" or "at most one". Values
arrive typed: ``instant`` as an aware datetime, ``date``/``dateTime`` as the [start, end)
interval they cover at their precision, integers as int, the string-like types as str.

Unknown parameters follow the search rule (search.html#errors): ignored and reported by
default, 400 with ``Prefer: handling=strict``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import BadRequest, Issue
from fhir_server.model.instant import parse_date_range

MAX_PARAMETERS = 100
MAX_VALUE_LENGTH = 4096
INT32 = 2**31 - 1
# Accepted everywhere, never declared: response shaping and this server's paging cursor.
RESERVED = frozenset({"_format", "_pretty", "_cursor"})

_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
_DATE_TIME = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2}))?)?)?"
)
_INTEGER = re.compile(r"[+-]?\d{1,10}")
_CODE = re.compile(r"[^\s]+( [^\s]+)*")
# A '+' in an offset arrives as a space when the client did not percent-encode it.
_SPACE_OFFSET = re.compile(r"(T\d{2}:\d{2}:\d{2}(?:\.\d+)?) (\d{2}:\d{2})$")
_STRING_TYPES = frozenset({"string", "code", "id", "uri", "url", "canonical", "markdown"})
_INTEGER_TYPES = {"integer": -INT32 - 1, "unsignedInt": 0, "positiveInt": 1}
_COMPLEX_TYPES = frozenset({"Coding", "CodeableConcept"})
"""Taken from a Parameters body only (operations.html#request: GET carries primitives), as
the JSON object, whose content the operation checks."""
SUPPORTED_TYPES = frozenset(
    {*_STRING_TYPES, *_INTEGER_TYPES, *_COMPLEX_TYPES, "boolean", "instant", "date", "dateTime"}
)


@dataclass(frozen=True)
class ParameterSpec:
    """One ``in`` parameter of an OperationDefinition: its name, FHIR type and cardinality
    (``max`` None for ``*``)."""

    name: str
    type: str
    min: int
    max: int | None


@dataclass(frozen=True)
class Arguments:
    """The checked values per parameter name, the accepted ones in their URL form (for
    paging links, which are GET URLs even when the call was a POST), and the issues of the
    parameters ignored."""

    values: Mapping[str, list[Any]]
    query: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[Issue] = field(default_factory=list)

    def first(self, name: str) -> Any:
        found = self.values.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[Any]:
        return list(self.values.get(name, []))


def parameter_specs(definition: Mapping[str, Any]) -> tuple[ParameterSpec, ...]:
    """The ``in`` parameters of an OperationDefinition; ValueError for a type this parser
    does not know, so a bad definition fails at start-up rather than on a request."""
    specs: list[ParameterSpec] = []
    for parameter in definition.get("parameter", []):
        if parameter.get("use") != "in":
            continue
        kind = parameter.get("type")
        if kind not in SUPPORTED_TYPES:
            raise ValueError(
                f"{definition.get('url')}: parameter {parameter.get('name')} has type {kind}"
            )
        maximum = parameter.get("max", "1")
        specs.append(
            ParameterSpec(
                name=parameter["name"],
                type=kind,
                min=int(parameter.get("min", 0)),
                max=None if maximum == "*" else int(maximum),
            )
        )
    return tuple(specs)


def parse_arguments(
    specs: Sequence[ParameterSpec],
    query: Sequence[tuple[str, str]],
    body: Any = None,
    *,
    strict: bool = False,
) -> Arguments:
    """The arguments given in the URL (``query``) and in a ``Parameters`` body, checked."""
    by_name = {spec.name: spec for spec in specs}
    given: list[tuple[str, Any, str]] = []
    for name, value in query:
        if name in RESERVED or (value == "" and name in by_name):
            continue  # search.html: a URL parameter without a value is ignored
        if name in by_name and by_name[name].type in _COMPLEX_TYPES:
            raise BadRequest(
                f"{name} is a {by_name[name].type}: give it in a Parameters body (POST)",
                expression=name,
                rofecare_code="rofecare-2502",
            )
        given.append((name, value, name))
    if body is not None:
        given += _body_values(body, by_name)
    if len(given) > MAX_PARAMETERS:
        raise BadRequest(f"At most {MAX_PARAMETERS} parameters", rofecare_code="rofecare-2507")
    values: dict[str, list[Any]] = {}
    accepted: list[tuple[str, str]] = []
    ignored: list[Issue] = []
    for name, text, path in given:
        spec = by_name.get(name)
        if spec is None or text is None:
            _unknown(name, path, strict, ignored)
            continue
        if spec.type in _COMPLEX_TYPES:
            values.setdefault(name, []).append(text)  # the object; it has no URL form
            continue
        values.setdefault(name, []).append(_convert(spec, text, path))
        accepted.append((name, text))
    for spec in specs:
        count = len(values.get(spec.name, []))
        if spec.max is not None and count > spec.max:
            raise BadRequest(
                f"{spec.name} may be given at most {spec.max} time(s), got {count}",
                expression=spec.name,
                rofecare_code="rofecare-2503",
            )
        if count < spec.min:
            raise BadRequest(
                f"{spec.name} is required", expression=spec.name, rofecare_code="rofecare-2505"
            )
    return Arguments(values, accepted, ignored)


def _unknown(name: str, path: str, strict: bool, ignored: list[Issue]) -> None:
    message = f"Unknown parameter {name[:80]!r}"
    if strict:
        raise BadRequest(message, expression=path, rofecare_code="rofecare-2504")
    ignored.append(
        Issue("warning", "not-supported", f"{message} was ignored", "rofecare-2504", (path,))
    )


def _body_values(body: Any, by_name: Mapping[str, ParameterSpec]) -> list[tuple[str, Any, str]]:
    """(name, value as URL text or the object of a complex type, FHIRPath) of each
    ``Parameters.parameter`` (value None for a parameter the operation does not declare);
    400 for a body that is not a well-formed Parameters resource
    (https://hl7.org/fhir/R4/parameters.html)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise _malformed("The body must be a Parameters resource", "Parameters")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise _malformed("Parameters.parameter must be an array", "Parameters.parameter")
    found: list[tuple[str, Any, str]] = []
    for index, parameter in enumerate(parameters):
        path = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise _malformed("Each parameter must be an object with a name", path)
        name: str = parameter["name"]
        spec = by_name.get(name)
        if spec is None:
            found.append((name, None, path))
            continue
        keys = [key for key in parameter if key.startswith("value")]
        if len(keys) != 1 or "part" in parameter or "resource" in parameter:
            raise _malformed(f"{name[:40]} must carry exactly one value[x]", path)
        key = keys[0]
        value_path = f"{path}.{key}"
        found.append((name, _json_value(spec, key, parameter[key], value_path), value_path))
    return found


def _json_value(spec: ParameterSpec, key: str, value: Any, path: str) -> Any:
    """The value as the text a URL would carry, after checking its value[x] key and JSON
    type: ``value<Type>`` as declared, or ``valueString`` holding the URL form; a complex
    type's object as it is."""
    typed = "value" + spec.type[0].upper() + spec.type[1:]
    if spec.type in _COMPLEX_TYPES:
        if key != typed or not isinstance(value, dict):
            raise BadRequest(
                f"{spec.name} takes a {typed} object",
                expression=path,
                rofecare_code="rofecare-2502",
            )
        return value
    if key == typed and spec.type in _INTEGER_TYPES:
        valid = isinstance(value, int) and not isinstance(value, bool)
    elif key == typed and spec.type == "boolean":
        valid = isinstance(value, bool)
    elif key in (typed, "valueString"):
        valid = isinstance(value, str)
    else:
        raise BadRequest(
            f"{spec.name} takes {typed} (or valueString), not {key[:40]}",
            expression=path,
            rofecare_code="rofecare-2502",
        )
    if not valid:
        raise BadRequest(
            f"{spec.name}: {key} must hold a {spec.type}",
            expression=path,
            rofecare_code="rofecare-2502",
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _convert(spec: ParameterSpec, text: str, path: str) -> Any:
    if len(text) > MAX_VALUE_LENGTH:
        raise BadRequest(
            f"{spec.name} is longer than {MAX_VALUE_LENGTH} characters",
            expression=path,
            rofecare_code="rofecare-2507",
        )
    converted = _typed(spec.type, text)
    if converted is None:
        raise BadRequest(
            f"{spec.name}={text[:40]!r} is not a valid {spec.type}{_EXAMPLES.get(spec.type, '')}",
            expression=path,
            rofecare_code="rofecare-2502",
        )
    return converted


_EXAMPLES = {
    "instant": " (e.g. 2024-03-05T10:00:00Z)",
    "date": " (e.g. 2024, 2024-03 or 2024-03-05)",
    "integer": " (a whole number)",
}


def _typed(kind: str, text: str) -> Any:
    """The typed value, or None when ``text`` is not of ``kind``."""
    if kind in _STRING_TYPES:
        return text if _CODE.fullmatch(text) or kind in ("string", "markdown") else None
    if kind in _INTEGER_TYPES:
        if not _INTEGER.fullmatch(text):
            return None
        number = int(text)
        return number if _INTEGER_TYPES[kind] <= number <= INT32 else None
    if kind == "boolean":
        return {"true": True, "false": False}.get(text)
    if kind == "instant":
        text = _SPACE_OFFSET.sub(r"\1+\2", text)
        interval = parse_date_range(text) if _INSTANT.fullmatch(text) else None
        return interval[0] if interval else None
    pattern = _DATE if kind == "date" else _DATE_TIME
    text = _SPACE_OFFSET.sub(r"\1+\2", text)
    return parse_date_range(text) if pattern.fullmatch(text) else None


def _malformed(message: str, path: str) -> BadRequest:
    return BadRequest(message, expression=path, rofecare_code="rofecare-2501")
