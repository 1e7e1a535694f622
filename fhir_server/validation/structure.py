"""Structural validation against the official FHIR R4 JSON schema.

Two engines, each for what it does best. jsonschema-rs (Rust) answers whether a resource is
valid: ~5 us per Synthea resource, where fastjsonschema's generated Python took ~95 us, a
tenth of the CPU of a bulk load, and ~2 s to compile in every new process. On the rare
rejection, jsonschema's Draft-06 validator lists *every* fault with its path, which the
client needs to fix its request; a large refused resource is explained by jsonschema-rs too
(``_explain_large``). Each resource is checked against its own type's definition, not the
schema's 146-way ``oneOf`` (whose errors say nothing useful).

The schema's patterns end in ``$``. jsonschema-rs reads them as ECMA-262 does (the end of
the text), but Python's ``$`` also matches before a final newline, so for jsonschema they
are anchored with ``\\Z`` instead: ``"id": "abc\\n"`` must not pass as a valid id.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from fhir_server.definitions.registry import load_schema
from fhir_server.errors import Issue
from fhir_server.model.resource import json_size, nests_deeper_than

if TYPE_CHECKING:  # imported on the first refusal: accepting needs only jsonschema-rs
    import jsonschema

MAX_REPORTED_ISSUES = 50
# A refused resource larger than this (in JSON nodes) is explained by jsonschema-rs, not by
# jsonschema, whose Python walk took 14.6 s over an 8.7 MB body (``_explain_large``).
LARGE_RESOURCE_NODES = 2_000


def _declare_objects(node: Any) -> None:
    """The R4 schema's datatypes (HumanName, Coding, Meta, ...) list properties but do not
    say ``"type": "object"``, so a string or null would pass where they belong."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict) and "type" not in node:
            node["type"] = "object"
        for child in node.values():
            _declare_objects(child)
    elif isinstance(node, list):
        for child in node:
            _declare_objects(child)


def _anchor_for_python(node: Any) -> None:
    """``$`` -> ``\\Z`` at the end of every pattern, for Python's ``re`` (see above)."""
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith("$") and not pattern.endswith("\\$"):
            node["pattern"] = pattern[:-1] + "\\Z"
        for child in node.values():
            _anchor_for_python(child)
    elif isinstance(node, list):
        for child in node:
            _anchor_for_python(child)


class StructureValidator:
    """Validates one resource against the R4 definition of its ``resourceType``."""

    def __init__(self, resource_types: frozenset[str], max_depth: int = 64) -> None:
        self._resource_types = resource_types
        self._max_depth = max_depth

    def warm_up(self) -> None:
        """Compile now (~0.1 s) rather than on the first write."""
        self._compiled()

    async def validate_async(self, resource: Any, expected_type: str | None = None) -> list[Issue]:
        """``validate``, for the event loop. A thread would not let the loop run meanwhile:
        jsonschema-rs holds the GIL (two threads validating took longer than one doing
        both), and the whole check of an 8.7 MB body, valid or not, takes ~0.2 s, most of
        it the nesting walk; a Synthea resource takes microseconds."""
        return self.validate(resource, expected_type)

    def validate(self, resource: Any, expected_type: str | None = None) -> list[Issue]:
        """All structural faults of ``resource``; an empty list means it is valid R4 JSON."""
        issues = self._screen(resource, expected_type)
        return self._explain_safely(resource) if issues is None else issues

    def _screen(self, resource: Any, expected_type: str | None) -> list[Issue] | None:
        """The faults found before the schema's detail is needed: [] when ``resource`` is
        valid, None when the schema refuses it and ``_explain_safely`` must say why."""
        if not isinstance(resource, dict):
            return [_issue("The body must be a JSON object holding a FHIR resource", None)]
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or not resource_type:
            return [_issue("The resource has no resourceType", "resourceType", "required")]
        if resource_type not in self._resource_types:
            return [
                _issue(f"Unknown resource type {resource_type!r}", "resourceType", "not-supported")
            ]
        if expected_type is not None and resource_type != expected_type:
            return [
                _issue(
                    f"resourceType {resource_type!r} does not match the URL's {expected_type!r}",
                    "resourceType",
                )
            ]
        if nests_deeper_than(resource, self._max_depth):
            return [_issue(f"The resource is nested deeper than {self._max_depth} levels", None)]
        try:
            return [] if self._compiled()({resource_type: resource}) else None
        except ValueError as error:  # not JSON: a lone surrogate, a key that is no string
            return [_issue(f"The resource is not valid JSON: {str(error)[:200]}", None)]

    def _explain_safely(self, resource: dict[str, Any]) -> list[Issue]:
        resource_type = resource["resourceType"]
        if json_size(resource, LARGE_RESOURCE_NODES) > LARGE_RESOURCE_NODES:
            return self._explain_large(resource_type, resource)
        try:
            return self._explain(resource_type, resource)
        except RecursionError:
            return [_issue("The resource is nested too deeply to validate", None)]

    def _compiled(self) -> Callable[[dict[str, Any]], bool]:
        return _fast_validator(self._resource_types).is_valid

    def _explain_large(
        self, resource_type: str, resource: dict[str, Any], path: str | None = None
    ) -> list[Issue]:
        """The faults of a large refused resource, as jsonschema-rs finds them. jsonschema,
        in Python, took 14.6 s to find the one wrong value at the end of an 8.7 MB Patient,
        holding the GIL most of it: a body any client may send. The messages are
        jsonschema-rs's, placed at the same FHIRPath as ``_explain``'s."""
        where = path or resource_type
        validator = _fast_validator(self._resource_types)
        issues: list[Issue] = []
        errors = validator.iter_errors({resource_type: resource})
        for error in itertools.islice(errors, MAX_REPORTED_ISSUES):
            at = fhirpath_of(where, list(error.instance_path)[1:])
            kind, instance = error.kind, error.instance
            contained = instance.get("resourceType") if isinstance(instance, dict) else None
            if kind.name == "oneOf" and isinstance(instance, dict) and isinstance(contained, str):
                if contained in self._resource_types:
                    issues.extend(self._explain_large(contained, instance, at))
                else:
                    issues.append(_issue(f"Invalid contained resource of type {contained!r}", at))
            elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
                issues.extend(
                    _issue(f"Unknown element {name!r}", f"{at}.{name}", "structure")
                    for name in kind.unexpected
                )
            elif kind.name == "pattern":
                issues.append(_issue(f"Invalid value {_short(instance)} for this element type", at))
            elif kind.name == "required":
                issues.append(_issue(f"Missing required element: {error.message}", at, "required"))
            else:
                issues.append(_issue(error.message[:300], at))
        return issues[:MAX_REPORTED_ISSUES] or [
            _issue("The resource does not conform to the R4 schema", path)
        ]

    def _explain(
        self, resource_type: str, resource: dict[str, Any], path: str | None = None
    ) -> list[Issue]:
        """Every fault with its path; a contained resource is explained against its own type."""
        validator = _detailed_validator(resource_type)
        issues: list[Issue] = []
        first_errors = itertools.islice(validator.iter_errors(resource), MAX_REPORTED_ISSUES)
        for error in sorted(first_errors, key=lambda e: [str(part) for part in e.path]):
            instance = error.instance
            contained_type = instance.get("resourceType") if isinstance(instance, dict) else None
            if error.validator == "oneOf" and contained_type in self._resource_types:
                inner_path = fhirpath_of(path or resource_type, error.absolute_path)
                issues.extend(self._explain(contained_type, instance, inner_path))
            else:
                issues.extend(_describe(path or resource_type, error))
            if len(issues) >= MAX_REPORTED_ISSUES:
                break
        return issues or [_issue("The resource does not conform to the R4 schema", path)]


# The schema is immutable data, so its compiled forms are shared by every validator in the
# process (tests build many apps).
_compile_lock = threading.Lock()


@functools.cache
def _objects_declared() -> dict[str, Any]:
    schema = load_schema()  # read afresh: a copy of its own to change
    _declare_objects(schema)
    return schema


@functools.cache
def _prepared_schema() -> dict[str, Any]:
    schema = load_schema()
    _declare_objects(schema)
    _anchor_for_python(schema)
    return schema


@functools.cache
def _fast_validator_unlocked(resource_types: frozenset[str]) -> jsonschema_rs.Validator:
    """The validator of ``{resourceType: resource}``: the wrapper object picks the type's
    definition without the 146-way ``oneOf``. Compiling takes ~60 ms."""
    schema = _objects_declared()
    root = {
        "$schema": schema["$schema"],
        "definitions": schema["definitions"],
        "type": "object",
        "properties": {name: {"$ref": f"#/definitions/{name}"} for name in resource_types},
    }
    return jsonschema_rs.Draft6Validator(root)


def _fast_validator(resource_types: frozenset[str]) -> jsonschema_rs.Validator:
    with _compile_lock:
        return _fast_validator_unlocked(resource_types)


@functools.cache
def _detailed_validator_unlocked(resource_type: str) -> jsonschema.Draft6Validator:
    import jsonschema

    schema = _prepared_schema()
    root = {
        "$schema": schema["$schema"],
        "definitions": schema["definitions"],
        "$ref": f"#/definitions/{resource_type}",
    }
    return jsonschema.Draft6Validator(root)


def _detailed_validator(resource_type: str) -> jsonschema.Draft6Validator:
    with _compile_lock:
        return _detailed_validator_unlocked(resource_type)


def _describe(resource_type: str, error: jsonschema.ValidationError) -> list[Issue]:
    path = fhirpath_of(resource_type, error.absolute_path)
    if error.validator == "additionalProperties":
        unexpected = _unexpected_properties(error)
        return [
            _issue(f"Unknown element {name!r}", f"{path}.{name}", "structure")
            for name in unexpected
        ] or [_issue(error.message, path)]
    if error.validator == "required":
        return [_issue(f"Missing required element: {error.message}", path, "required")]
    if error.validator == "pattern":
        return [_issue(f"Invalid value {_short(error.instance)} for this element type", path)]
    if error.validator == "type":
        return [
            _issue(f"Wrong type: {_short(error.instance)} is not {error.validator_value}", path)
        ]
    if error.validator == "enum":
        values = error.validator_value if isinstance(error.validator_value, list) else []
        allowed = ", ".join(str(v) for v in values[:12])
        return [
            _issue(
                f"Invalid code {_short(error.instance)}; allowed: {allowed}", path, "code-invalid"
            )
        ]
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        kind = error.instance.get("resourceType")
        return [_issue(f"Invalid contained resource of type {kind!r}", path)]
    return [_issue(error.message[:300], path)]


def _unexpected_properties(error: jsonschema.ValidationError) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = set(schema.get("properties", {}))
    instance = error.instance if isinstance(error.instance, dict) else {}
    return sorted(name for name in instance if name not in allowed)


def fhirpath_of(resource_type: str, path: Any) -> str:
    """``['name', 0, 'given', 1]`` -> ``Patient.name[0].given[1]`` (OperationOutcome.expression)."""
    text = resource_type
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _issue(diagnostics: str, expression: str | None, code: str = "structure") -> Issue:
    return Issue(
        severity="error",
        code=code,
        diagnostics=diagnostics,
        rofecare_code="rofecare-1401",
        expression=(expression,) if expression else (),
    )
