"""A resource checked against one compiled profile: every fault an Issue with its key and path.

Each fault names the rule it breaks (``Issue.key``): a FHIRPath invariant by its own
constraint key (``rof-pat-1``), the other rules by kind and element id
(``min:Patient.birthDate``, ``binding:Encounter.class``, ``slice:Patient.identifier``), so
clients and tests can tell faults apart without parsing prose, and the ``expression`` is
the FHIRPath of the faulty element in this instance (``Patient.identifier[1].system``).

Rules are checked where the profile states them (https://hl7.org/fhir/R4/profiling.html):
an element's cardinality within each occurrence of its parent, fixed values by equality,
patterns by containment (https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.pattern_x_),
required bindings through the terminology hook, and slices by their value or pattern
discriminators, each slice's own rules applying to its members only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fhir_server.definitions.registry import load_element_types
from fhir_server.definitions.terminology import Terminology
from fhir_server.errors import Issue
from fhir_server.validation.profile_compiler import CompiledProfile, Constraint, ElementRule

PROFILE_FAULT = "rofecare-1801"
CONSTRAINT_FAULT = "rofecare-1802"
BINDING_UNCHECKED = "rofecare-1803"
CONSTRAINT_ERROR = "rofecare-1804"
PRIMITIVES = frozenset(load_element_types()["_primitive"])

Occurrence = tuple[str, Any]  # (FHIRPath of this occurrence, its JSON value; None: extension only)


class ProfileChecker:
    def __init__(self, terminology: Terminology | None) -> None:
        self._terminology = terminology

    def check(self, profile: CompiledProfile, resource: dict[str, Any]) -> list[Issue]:
        issues: list[Issue] = []
        _Run(profile, resource, self._terminology, issues).element(
            profile.root, profile.type, resource, profile.type
        )
        return issues


class _Run:
    def __init__(
        self,
        profile: CompiledProfile,
        resource: dict[str, Any],
        terminology: Terminology | None,
        issues: list[Issue],
    ) -> None:
        self.profile, self.resource = profile, resource
        self.terminology, self.issues = terminology, issues

    def fault(self, key: str, message: str, path: str, code: str = "invariant") -> None:
        self.issues.append(
            Issue(
                "error",
                code,
                f"{message} (profile {self.profile.url})",
                PROFILE_FAULT,
                (path,),
                key=key,
            )
        )

    def element(self, rule: ElementRule, path: str, value: Any, type_code: str | None) -> None:
        """The rules of ``rule`` on one occurrence, then its children's."""
        if value is not None:
            self.value_rules(rule, path, value, type_code)
        if not isinstance(value, dict):
            return
        for child in rule.children.values():
            occurrences = list(_occurrences(value, child.name, path))
            self.cardinality(child, path, occurrences)
            if child.slices:
                self.slices(child, path, occurrences)
            for occurrence_path, occurrence, occurrence_type in occurrences:
                self.element(child, occurrence_path, occurrence, occurrence_type)

    def cardinality(self, rule: ElementRule, parent: str, occurrences: list[Any]) -> None:
        count, where = len(occurrences), f"{parent}.{rule.name.removesuffix('[x]')}"
        if rule.min is not None and count < rule.min:
            self.fault(
                f"min:{rule.path}",
                f"{rule.path} needs at least {rule.min}, found {count}",
                where,
                "required",
            )
        if rule.max is not None and count > rule.max:
            self.fault(
                f"max:{rule.path}", f"{rule.path} allows at most {rule.max}, found {count}", where
            )

    def slices(self, rule: ElementRule, parent: str, occurrences: list[Any]) -> None:
        members: dict[str, list[Any]] = {name: [] for name in rule.slices}
        for occurrence in occurrences:
            matched = False
            for name, member in rule.slices.items():
                if _in_slice(member, occurrence[1]):
                    members[name].append(occurrence)
                    matched = True
                    break
            if not matched and rule.closed:
                self.fault(
                    f"slice:{rule.path}",
                    f"{occurrence[0]} matches none of the slices of {rule.path} (closed)",
                    occurrence[0],
                )
        for name, member in rule.slices.items():
            self.cardinality(member, parent, members[name])
            for occurrence_path, occurrence, occurrence_type in members[name]:
                self.element(member, occurrence_path, occurrence, occurrence_type)

    def value_rules(self, rule: ElementRule, path: str, value: Any, type_code: str | None) -> None:
        if rule.types and rule.name.endswith("[x]") and type_code not in rule.types:
            self.fault(
                f"type:{rule.path}",
                f"{rule.path} must be one of {', '.join(rule.types)}, not {type_code}",
                path,
            )
        if rule.target_types:
            self.target(rule, path, value)
        if rule.fixed is not None and value != rule.fixed:
            self.fault(f"fixed:{rule.path}", f"{rule.path} must be exactly {rule.fixed!r}", path)
        if rule.pattern is not None and not _matches(value, rule.pattern):
            self.fault(
                f"pattern:{rule.path}", f"{rule.path} must contain {rule.pattern!r}", path, "value"
            )
        if rule.max_length is not None and isinstance(value, str) and len(value) > rule.max_length:
            self.fault(
                f"maxLength:{rule.path}",
                f"{rule.path} is longer than {rule.max_length} characters",
                path,
                "too-long",
            )
        if rule.binding is not None and rule.binding[0] == "required":
            self.binding(rule, path, value, rule.binding[1])
        for constraint in rule.constraints:
            self.constraint(constraint, path, value if rule.path != self.profile.type else None)

    def target(self, rule: ElementRule, path: str, value: Any) -> None:
        if not isinstance(value, dict):
            return
        target = _reference_type(value)
        if target is not None and target not in rule.target_types:
            self.fault(
                f"target:{rule.path}",
                f"{rule.path} must reference {' or '.join(rule.target_types)}, not {target}",
                path,
            )

    def binding(self, rule: ElementRule, path: str, value: Any, value_set: str) -> None:
        codes = list(_codes(value))
        if not codes:
            if isinstance(value, dict) and ("coding" in value or "text" in value):
                self.fault(
                    f"binding:{rule.path}",
                    f"{rule.path} must be coded from {value_set}",
                    path,
                    "code-invalid",
                )
            return
        if self.terminology is None:
            return
        unknown = False
        for system, code in codes:
            answer = self.terminology.validate_code(value_set, system, code)
            if answer is None:
                unknown = True
            elif answer.valid:
                return
        if unknown:
            self.issues.append(
                Issue(
                    "warning",
                    "not-supported",
                    f"{rule.path}: value set {value_set} is not known here; its binding is "
                    "not checked",
                    BINDING_UNCHECKED,
                    (path,),
                    key=f"binding:{rule.path}",
                )
            )
            return
        shown = ", ".join(f"{system}|{code}" if system else code for system, code in codes)
        self.fault(
            f"binding:{rule.path}",
            f"{rule.path}: {shown} is not in the value set {value_set}",
            path,
            "code-invalid",
        )

    def constraint(self, constraint: Constraint, path: str, node: Any) -> None:
        try:
            context = {"resource": self.resource, "rootResource": self.resource}
            result = constraint.evaluate(self.resource if node is None else node, context)
        except Exception as error:  # fhirpathpy raises plain Exceptions on type faults
            self.issues.append(
                Issue(
                    "error",
                    "invariant",
                    f"{constraint.key} could not be evaluated ({type(error).__name__}): "
                    f"{constraint.human}",
                    CONSTRAINT_ERROR,
                    (path,),
                    key=constraint.key,
                )
            )
            return
        if result == [False] or (result and all(item is False for item in result)):
            self.issues.append(
                Issue(
                    constraint.severity,  # type: ignore[arg-type]
                    "invariant",
                    f"{constraint.key}: {constraint.human}",
                    CONSTRAINT_FAULT,
                    (path,),
                    key=constraint.key,
                )
            )


def _occurrences(node: dict[str, Any], name: str, parent: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, value, type code) of each occurrence of element ``name`` in ``node``; a
    primitive present only through its ``_name`` extensions counts, with value None."""
    if name.endswith("[x]"):
        base = name[:-3]
        for key in node:
            suffix = key[len(base) :]
            if key.startswith(base) and suffix[:1].isupper():
                type_code = suffix[0].lower() + suffix[1:]
                type_code = type_code if type_code in PRIMITIVES else suffix
                yield from _listed(node, key, parent, type_code)
        return
    yield from _listed(node, name, parent, None)


def _listed(node: dict[str, Any], key: str, parent: str, type_code: Any) -> Iterator[Any]:
    value = node.get(key)
    if value is None:
        value = node.get(f"_{key}")
        if value is None:
            return
        items = value if isinstance(value, list) else [value]
        for index, _ in enumerate(items):
            suffix = f"[{index}]" if isinstance(value, list) else ""
            yield f"{parent}.{key}{suffix}", None, type_code
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield f"{parent}.{key}[{index}]", item, type_code
    else:
        yield f"{parent}.{key}", value, type_code


def _in_slice(member: ElementRule, value: Any) -> bool:
    for path, is_pattern, expected in member.criteria:
        found = _values_at(value, path)
        if is_pattern:
            if not any(_matches(item, expected) for item in found):
                return False
        elif expected not in found:
            return False
    return True


def _values_at(value: Any, path: tuple[str, ...]) -> list[Any]:
    current = [value]
    for name in path:
        following: list[Any] = []
        for item in current:
            if isinstance(item, dict) and name in item:
                child = item[name]
                following.extend(child if isinstance(child, list) else [child])
        current = following
    return current


def _matches(value: Any, pattern: Any) -> bool:
    """Does ``value`` contain ``pattern`` (every pattern property, every list item somewhere)?"""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(key in value and _matches(value[key], item) for key, item in pattern.items())
    if isinstance(pattern, list):
        if not isinstance(value, list):
            return False
        return all(any(_matches(item, wanted) for item in value) for wanted in pattern)
    return bool(value == pattern)


def _codes(value: Any) -> Iterator[tuple[str | None, str]]:
    """(system, code) pairs of a code, Coding, CodeableConcept or Quantity."""
    if isinstance(value, str):
        yield None, value
        return
    if not isinstance(value, dict):
        return
    codings = value.get("coding")
    if isinstance(codings, list):
        for coding in codings:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                yield coding.get("system"), coding["code"]
    elif isinstance(value.get("code"), str):
        yield value.get("system"), value["code"]


def _reference_type(reference: dict[str, Any]) -> str | None:
    """The resource type a Reference points at, when it says (relative or absolute URL,
    or ``type``); None for contained, urn and identifier-only references."""
    target = reference.get("reference")
    if isinstance(target, str) and not target.startswith(("#", "urn:")):
        parts = target.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2:
            return parts[-2]
    declared = reference.get("type")
    return declared if isinstance(declared, str) else None
