"""A StructureDefinition's differential, compiled once into a tree of element rules.

Rofecare validates its own profiles (and any a client stores) from their *differential*
(https://hl7.org/fhir/R4/profiling.html): each rule a profile adds (cardinality, fixed and
pattern values, types and reference targets, required bindings, FHIRPath invariants,
slices) is checked where it is stated, against the instance's JSON. The base definitions
are already enforced by the R4 JSON schema (``structure.py``), so no snapshot is needed,
and the element paths are checked against the R4 element types so a misspelt path fails
at start-up instead of never matching.

What a profile asks and this compiler cannot check is refused at compile time (a
``ProfileError`` naming the element): a rule silently ignored would let data through that
the hospital believes is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.definitions.registry import load_element_types
from fhir_server.validation.fhirpath_shapes import FhirPathFunction, direct

# Element properties that describe rather than constrain (documentation, mappings).
DESCRIPTIVE = frozenset(
    {
        "id",
        "path",
        "sliceName",
        "short",
        "definition",
        "comment",
        "requirements",
        "alias",
        "label",
        "mustSupport",
        "isSummary",
        "isModifier",
        "isModifierReason",
        "meaningWhenMissing",
        "condition",
        "mapping",
        "base",
        "extension",
        "orderMeaning",
        "representation",
        "code",
    }
)
CHECKED = frozenset({"min", "max", "type", "binding", "constraint", "slicing", "maxLength"})
DISCRIMINATOR_TYPES = frozenset({"value", "pattern"})
BINDING_STRENGTHS = frozenset({"required", "extensible", "preferred", "example"})
BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"


class ProfileError(ValueError):
    """A StructureDefinition this server cannot enforce as written."""


@dataclass(frozen=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str
    evaluate: FhirPathFunction


@dataclass(frozen=True)
class Discriminator:
    kind: str  # value | pattern
    path: tuple[str, ...]  # () for $this


@dataclass
class ElementRule:
    """The rules on one element (or one slice of it), with its children's."""

    path: str  # the element id, e.g. Patient.identifier:mrn.system
    name: str  # the JSON name, e.g. identifier or value[x]
    min: int | None = None
    max: int | None = None  # None: unbounded ("*") or not restricted
    types: tuple[str, ...] = ()  # allowed type codes of a choice element
    target_types: tuple[str, ...] = ()  # allowed resource types of a Reference
    fixed: Any = None
    pattern: Any = None
    binding: tuple[str, str] | None = None  # (strength, value set)
    constraints: list[Constraint] = field(default_factory=list)
    max_length: int | None = None
    discriminators: tuple[Discriminator, ...] = ()
    closed: bool = False
    children: dict[str, ElementRule] = field(default_factory=dict)
    slices: dict[str, ElementRule] = field(default_factory=dict)
    extension_url: str | None = None  # a slice of extension: the url it takes
    # a slice's membership test: (discriminator path, is_pattern, value), all must hold
    criteria: tuple[tuple[tuple[str, ...], bool, Any], ...] = ()

    @property
    def has_value_rule(self) -> bool:
        return bool(
            self.types
            or self.target_types
            or self.fixed is not None
            or self.pattern is not None
            or self.binding
            or self.constraints
            or self.max_length is not None
        )


@dataclass(frozen=True)
class CompiledProfile:
    url: str
    version: str | None
    name: str
    type: str
    root: ElementRule
    applies_to: FhirPathFunction | None  # which resources of ``type`` it governs unasked
    definition: dict[str, Any]


APPLIES_TO_EXTENSION = "http://rofecare.com/fhir/StructureDefinition/applies-to"


def compile_profile(
    definition: dict[str, Any], fhirpath: Callable[[str], FhirPathFunction]
) -> CompiledProfile:
    """``definition`` (a constraint StructureDefinition on a resource type) compiled."""
    url = definition.get("url")
    resource_type = definition.get("type")
    if not isinstance(url, str) or not isinstance(resource_type, str):
        raise ProfileError("A profile needs a url and a type")
    if definition.get("derivation") != "constraint":
        raise ProfileError(f"{url}: only constraint StructureDefinitions are profiles")
    base = definition.get("baseDefinition")
    if base != BASE_PROFILE + resource_type:
        raise ProfileError(f"{url}: baseDefinition must be {BASE_PROFILE}{resource_type}")
    known = load_element_types().get(resource_type)
    if known is None:
        raise ProfileError(f"{url}: {resource_type} is not an R4 resource type")
    elements = (definition.get("differential") or {}).get("element")
    if not isinstance(elements, list) or not elements:
        raise ProfileError(f"{url}: the differential has no elements")
    root = ElementRule(path=resource_type, name=resource_type)
    for element in elements:
        _add(root, resource_type, element, fhirpath, url)
    _settle_slices(root)
    applies = None
    for extension in definition.get("extension") or []:
        if extension.get("url") == APPLIES_TO_EXTENSION:
            expression = extension.get("valueString")
            applies = _compile(fhirpath, expression, url, "applies-to")
            # Evaluated on every write of the type: its common shape, without fhirpathpy.
            applies = direct(str(expression), resource_type) or applies
    return CompiledProfile(
        url=url,
        version=definition.get("version"),
        name=str(definition.get("name") or url),
        type=resource_type,
        root=root,
        applies_to=applies,
        definition=definition,
    )


def _add(
    root: ElementRule,
    resource_type: str,
    element: dict[str, Any],
    fhirpath: Callable[[str], FhirPathFunction],
    url: str,
) -> None:
    element_id = element.get("id") or element.get("path")
    if not isinstance(element_id, str):
        raise ProfileError(f"{url}: an element has neither id nor path")
    unknown = set(element) - DESCRIPTIVE - CHECKED
    unknown -= {key for key in element if key.startswith(("fixed", "pattern", "example"))}
    if unknown:
        raise ProfileError(f"{url}: {element_id} uses {sorted(unknown)}, not enforced here")
    segments = element_id.split(".")
    if segments[0] != resource_type:
        raise ProfileError(f"{url}: {element_id} is not an element of {resource_type}")
    rule = root
    plain: list[str] = []
    for segment in segments[1:]:
        name, _, slice_name = segment.partition(":")
        plain.append(name)
        if not _known_path(resource_type, plain):
            raise ProfileError(f"{url}: {element_id}: no element {'.'.join(plain)}")
        child = rule.children.get(name)
        if child is None:
            child = ElementRule(path=f"{rule.path}.{name}", name=name)
            rule.children[name] = child
        rule = child
        if slice_name:
            if not rule.discriminators:
                raise ProfileError(f"{url}: slice {element_id} before the slicing of its element")
            member = rule.slices.get(slice_name)
            if member is None:
                member = ElementRule(path=f"{rule.path}:{slice_name}", name=name)
                rule.slices[slice_name] = member
            rule = member
    _apply(rule, element, fhirpath, url, resource_type, plain)


def _known_path(resource_type: str, plain: list[str]) -> bool:
    """Is ``plain`` an element path of ``resource_type`` (through its datatypes)?"""
    types = load_element_types()
    owner = types[resource_type]
    prefix: list[str] = []
    for index, name in enumerate(plain):
        prefix.append(name)
        codes = owner.get(".".join(prefix))
        if codes is None:
            return False
        if index + 1 < len(plain) and codes and codes[0] not in ("BackboneElement", "Element"):
            if len(codes) != 1 or codes[0] not in types:
                # into a choice's or a primitive's children: only id and extension exist
                return plain[index + 1] in ("id", "extension") and index + 2 == len(plain)
            owner, prefix = types[codes[0]], []
    return True


def _apply(
    rule: ElementRule,
    element: dict[str, Any],
    fhirpath: Callable[[str], FhirPathFunction],
    url: str,
    resource_type: str,
    plain: list[str],
) -> None:
    where = f"{url}: {rule.path}"
    if "min" in element:
        rule.min = int(element["min"])
    if "max" in element:
        rule.max = None if element["max"] == "*" else int(element["max"])
    if "maxLength" in element:
        rule.max_length = int(element["maxLength"])
    for key, value in element.items():
        if key.startswith("fixed") and len(key) > 5:
            rule.fixed = value
        elif key.startswith("pattern") and len(key) > 7:
            rule.pattern = value
    types = element.get("type") or []
    if types:
        rule.types = tuple(str(item.get("code")) for item in types)
        targets: list[str] = []
        for item in types:
            for target in item.get("targetProfile") or []:
                if not str(target).startswith(BASE_PROFILE):
                    raise ProfileError(f"{where}: targetProfile {target} must be a base type")
                targets.append(str(target)[len(BASE_PROFILE) :])
            if item.get("code") == "Extension" and item.get("profile"):
                rule.extension_url = str(item["profile"][0])
        rule.target_types = tuple(targets)
        if not rule.name.endswith("[x]") and len(rule.types) > 1:
            raise ProfileError(f"{where}: several types on an element that is not a choice")
    binding = element.get("binding")
    if binding is not None:
        strength, value_set = binding.get("strength"), binding.get("valueSet")
        if strength not in BINDING_STRENGTHS or not isinstance(value_set, str):
            raise ProfileError(f"{where}: a binding needs a strength and a valueSet")
        rule.binding = (strength, value_set)
    for constraint in element.get("constraint") or []:
        key, expression = constraint.get("key"), constraint.get("expression")
        if not isinstance(key, str) or not isinstance(expression, str):
            raise ProfileError(f"{where}: a constraint needs a key and an expression")
        severity = constraint.get("severity", "error")
        if severity not in ("error", "warning"):
            raise ProfileError(f"{where}: constraint {key} has severity {severity!r}")
        rule.constraints.append(
            Constraint(
                key=key,
                severity=severity,
                human=str(constraint.get("human") or key),
                expression=expression,
                evaluate=_compile(fhirpath, expression, url, key),
            )
        )
    slicing = element.get("slicing")
    if slicing is not None:
        discriminators = []
        for item in slicing.get("discriminator") or []:
            kind, path = item.get("type"), item.get("path")
            if kind not in DISCRIMINATOR_TYPES or not isinstance(path, str):
                raise ProfileError(f"{where}: discriminator {item} (value or pattern only)")
            discriminators.append(
                Discriminator(kind, () if path == "$this" else tuple(path.split(".")))
            )
        if not discriminators:
            raise ProfileError(f"{where}: slicing without a discriminator")
        rule.discriminators = tuple(discriminators)
        rule.closed = slicing.get("rules") == "closed"


def _compile(
    fhirpath: Callable[[str], FhirPathFunction], expression: Any, url: str, key: str
) -> FhirPathFunction:
    if not isinstance(expression, str) or not expression.strip():
        raise ProfileError(f"{url}: {key} has no FHIRPath expression")
    try:
        return fhirpath(expression)
    except Exception as error:  # fhirpathpy raises its parser's own exception types
        raise ProfileError(f"{url}: {key}: cannot compile {expression!r}: {error}") from None


def _settle_slices(rule: ElementRule) -> None:
    """Give every slice its membership test, from its parent's discriminators."""
    for member in rule.slices.values():
        member.criteria = tuple(
            (item.path, *discriminator_value(member, item)) for item in rule.discriminators
        )
        _settle_slices(member)
    for child in rule.children.values():
        _settle_slices(child)


def discriminator_value(member: ElementRule, discriminator: Discriminator) -> tuple[bool, Any]:
    """What a slice's members hold at the discriminator path: (is_pattern, value)."""
    rule = member
    for name in discriminator.path:
        child = rule.children.get(name)
        if child is None:
            if name == "url" and rule.extension_url is not None:
                return False, rule.extension_url
            raise ProfileError(f"{member.path}: no value at discriminator {discriminator.path}")
        rule = child
    if rule.fixed is not None:
        return False, rule.fixed
    if rule.pattern is not None:
        return True, rule.pattern
    if discriminator.path == ("url",) and rule.extension_url is not None:
        return False, rule.extension_url
    raise ProfileError(f"{member.path}: no fixed or pattern value at {discriminator.path}")
