"""SMART App Launch 2.x scopes: parsing, checking and granting.

A scope is what a token may do, the roles of its user (or the registration of its client)
bound what it can ever be granted. Scope grammar, v1 equivalences, wildcards and the
identity/launch scopes follow
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html (sections "Scopes for
requesting FHIR Resources", "Scope Equivalence", "Wildcard Scopes", "Scopes for requesting
context data", "Scopes for requesting identity data", "Scopes for requesting a refresh token").

Interaction letters map to the FHIR RESTful interactions (https://hl7.org/fhir/R4/http.html):
``c`` create, ``r`` read/vread/history of an instance, ``u`` update/patch, ``d`` delete,
``s`` search (type and system level). This module is standard library only so the token,
policy and registration code can all use it without pulling in the web stack.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal, cast, get_args

Context = Literal["patient", "user", "system"]
CONTEXTS: tuple[Context, ...] = cast(tuple[Context, ...], get_args(Context))
INTERACTION_LETTERS = "cruds"  # create read update delete search, the canonical order

# v1 suffixes and what they mean in v2 ("Scope Equivalence" in the spec).
V1_SUFFIXES: dict[str, str] = {"read": "rs", "write": "cud", "*": "cruds"}

# Identity, launch-context and refresh-token scopes: not about resources, kept verbatim.
NON_RESOURCE_SCOPES = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    }
)

_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class InvalidScope(ValueError):
    """A scope string that is not a well-formed SMART scope; the message names it."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(f"invalid scope {scope!r}: {reason}")
        self.scope = scope
        self.reason = reason


class UnsupportedScope(InvalidScope):
    """A well-formed scope Rofecare does not implement yet (v2 granular ``?param=value``).

    A subclass of InvalidScope so strict parsing refuses it, while lenient parsing can drop it
    and tell the client it was not granted (never silently widen it to the whole type).
    """


def _ordered_letters(letters: Iterable[str]) -> str:
    chosen = set(letters)
    return "".join(letter for letter in INTERACTION_LETTERS if letter in chosen)


def _check_interaction(interaction: str) -> None:
    if len(interaction) != 1 or interaction not in INTERACTION_LETTERS:
        raise ValueError(
            f"unknown interaction {interaction!r}: expected one of {INTERACTION_LETTERS!r}"
        )


@dataclass(frozen=True)
class ResourceScope:
    """One resource scope, ``<context>/<type or *>.<letters>``, in normalized form."""

    context: Context
    resource_type: str  # an R4 type name or "*"
    interactions: frozenset[str]  # subset of {"c","r","u","d","s"}, never empty

    def __post_init__(self) -> None:
        # Built by hand (roles, tests) as well as by parse_scope: refuse what cannot be a scope.
        shown = f"{self.context}/{self.resource_type}.{''.join(sorted(self.interactions))}"
        if self.context not in CONTEXTS:
            raise InvalidScope(shown, f"unknown context {self.context!r}")
        if self.resource_type != "*" and not _RESOURCE_TYPE.fullmatch(self.resource_type):
            raise InvalidScope(shown, f"bad resource type {self.resource_type!r}")
        if not self.interactions:
            raise InvalidScope(shown, "no interactions")
        unknown = set(self.interactions) - set(INTERACTION_LETTERS)
        if unknown:
            raise InvalidScope(shown, f"unknown interactions {sorted(unknown)!r}")
        object.__setattr__(self, "interactions", frozenset(self.interactions))

    def covers(self, resource_type: str, interaction: str) -> bool:
        """Whether this scope allows ``interaction`` (one letter of cruds) on ``resource_type``.

        ``*`` covers every type ("Wildcard Scopes" in the spec). An unknown letter raises
        ValueError: a caller passing "read" is a bug, not a denial.
        """
        _check_interaction(interaction)
        return interaction in self.interactions and self.resource_type in ("*", resource_type)

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{_ordered_letters(self.interactions)}"


def _parse_letters(scope: str, suffix: str) -> frozenset[str]:
    if suffix in V1_SUFFIXES:
        return frozenset(V1_SUFFIXES[suffix])
    if not suffix:
        raise InvalidScope(scope, "no interaction letters after '.'")
    unknown = sorted(set(suffix) - set(INTERACTION_LETTERS))
    if unknown:
        raise InvalidScope(scope, f"unknown interaction letters {''.join(unknown)!r}")
    positions = [INTERACTION_LETTERS.index(letter) for letter in suffix]
    if any(a >= b for a, b in pairwise(positions)):
        order = INTERACTION_LETTERS
        raise InvalidScope(scope, f"letters must appear once each, in the order {order!r}")
    return frozenset(suffix)


def parse_scope(text: str) -> ResourceScope | None:
    """A resource scope from v2 or v1 syntax, or None for a scope that is not about resources.

    v2: ``user/Patient.cruds``, ``patient/*.rs`` (letters once each, in cruds order).
    v1: ``.read`` = rs, ``.write`` = cud, ``.*`` = cruds ("Scope Equivalence" in the spec).
    None for the identity, launch-context and refresh-token scopes (openid, fhirUser, profile,
    launch, launch/patient, launch/encounter and any other ``launch/...`` context request,
    offline_access, online_access) and for any other scope without a ``/`` (e.g. ``email``):
    the caller decides about those.

    Raises InvalidScope for a malformed resource scope (unknown context, missing ``.``,
    resource type not ``[A-Z][A-Za-z]{0,63}`` or ``*``, empty/unknown/repeated/unordered
    letters) or a string that is not an RFC 6749 scope token; UnsupportedScope (a subclass)
    for a well-formed v2 granular scope with a query (``patient/Observation.rs?category=x``):
    Rofecare does not enforce search-parameter constraints yet, so it must not grant them.
    """
    if not _SCOPE_TOKEN.fullmatch(text):
        raise InvalidScope(text, "not an OAuth scope token (empty, space or forbidden character)")
    if text in NON_RESOURCE_SCOPES or text.startswith("launch/") or "/" not in text:
        return None
    context, _, rest = text.partition("/")
    if context not in CONTEXTS:
        raise InvalidScope(text, f"unknown context {context!r}; expected one of {CONTEXTS!r}")
    base, question, query = rest.partition("?")
    resource_type, dot, suffix = base.partition(".")
    if not dot:
        raise InvalidScope(text, "missing '.' between resource type and interactions")
    if resource_type != "*" and not _RESOURCE_TYPE.fullmatch(resource_type):
        raise InvalidScope(text, f"resource type {resource_type!r} is not a FHIR type name or *")
    interactions = _parse_letters(text, suffix)
    if question:
        if not query:
            raise InvalidScope(text, "empty query after '?'")
        raise UnsupportedScope(text, "granular scopes with search parameters are not supported")
    return ResourceScope(context, resource_type, interactions)


def _meet(allowed: Context, requested: Context) -> Context | None:
    """The context a grant takes: ``patient`` is the narrower part of ``user``; ``system``
    (backend services) stands apart and only meets itself."""
    if allowed == requested:
        return requested
    if {allowed, requested} == {"user", "patient"}:
        return "patient"
    return None


def _merge(scopes: Iterable[ResourceScope]) -> tuple[ResourceScope, ...]:
    letters: dict[tuple[Context, str], set[str]] = {}
    for scope in scopes:
        letters.setdefault((scope.context, scope.resource_type), set()).update(scope.interactions)
    return tuple(
        ResourceScope(context, resource_type, frozenset(chosen))
        for (context, resource_type), chosen in sorted(letters.items())
    )


MAX_REMEMBERED_CONTEXTS = 1_024


@dataclass(frozen=True)
class ScopeSet:
    """A set of granted or grantable scopes, normalized so equal sets compare equal.

    Resource scopes with the same context and type are merged (``user/Observation.rs`` and
    ``user/Observation.cu`` become ``user/Observation.crus``) and sorted; scopes of different
    contexts are kept apart because the context decides compartment confinement.
    """

    resource_scopes: tuple[ResourceScope, ...] = ()
    other: frozenset[str] = field(default_factory=frozenset)  # openid, launch/patient, ...
    # (resource type, interaction) -> contexts_for: every request asks once or twice, and a
    # set is shared by all requests of its token.
    _contexts: dict[tuple[str, str], frozenset[Context]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        for scope in self.other:
            if parse_scope(scope) is not None:
                raise InvalidScope(scope, "a resource scope belongs in resource_scopes")
        object.__setattr__(self, "resource_scopes", _merge(self.resource_scopes))
        object.__setattr__(self, "other", frozenset(self.other))

    @classmethod
    def _from_tokens(cls, tokens: Iterable[str], dropped: list[str] | None) -> ScopeSet:
        resource: list[ResourceScope] = []
        other: set[str] = set()
        for token in tokens:
            try:
                parsed = parse_scope(token)
            except InvalidScope:
                if dropped is None:
                    raise
                if token not in dropped:
                    dropped.append(token)
                continue
            if parsed is None:
                other.add(token)
            else:
                resource.append(parsed)
        return cls(tuple(resource), frozenset(other))

    @classmethod
    def parse(cls, text: str) -> ScopeSet:
        """Parse a space-separated scope string (RFC 6749 section 3.3); the first bad scope
        raises InvalidScope (or UnsupportedScope). Duplicates collapse."""
        return cls._from_tokens(text.split(), None)

    @classmethod
    def parse_lenient(cls, text: str) -> tuple[ScopeSet, list[str]]:
        """The valid, supported scopes and the dropped ones (in order, once each).

        For an authorization request: SMART lets the server grant fewer scopes than asked, so
        a malformed or unsupported scope is left out and reported rather than failing the launch.
        """
        dropped: list[str] = []
        return cls._from_tokens(text.split(), dropped), dropped

    def allows(
        self,
        resource_type: str,
        interaction: str,
        *,
        contexts: Collection[Context] = CONTEXTS,
    ) -> bool:
        """Whether a scope of one of ``contexts`` covers ``interaction`` on ``resource_type``."""
        return any(
            scope.context in contexts and scope.covers(resource_type, interaction)
            for scope in self.resource_scopes
        )

    def contexts_for(self, resource_type: str, interaction: str) -> frozenset[Context]:
        """Which contexts grant the interaction.

        The enforcement layer confines results to the patient compartment when only
        ``patient`` grants it (https://hl7.org/fhir/R4/compartmentdefinition-patient.html).
        """
        known = self._contexts.get((resource_type, interaction))
        if known is not None:
            return known
        _check_interaction(interaction)
        contexts = frozenset(
            scope.context
            for scope in self.resource_scopes
            if scope.covers(resource_type, interaction)
        )
        if len(self._contexts) < MAX_REMEMBERED_CONTEXTS:  # types are the client's to name
            self._contexts[(resource_type, interaction)] = contexts
        return contexts

    def grant(self, requested: ScopeSet) -> ScopeSet:
        """The part of ``requested`` that this set (a user's roles, a client's registration)
        permits: SMART servers may grant fewer scopes than requested.

        For each requested resource scope, the permitted letters are the requested ones that
        scopes of ``self`` allow on the same type (a ``*`` in self covers any type; a requested
        ``*`` is granted only by a ``*`` in self, never expanded into a list of types) in a
        compatible context: ``user`` in self permits ``user`` and ``patient`` requests;
        ``patient`` in self permits ``patient`` and narrows a ``user`` request to ``patient``;
        ``system`` meets only ``system``. Scopes left without letters are dropped.
        Non-resource scopes are passed through unchanged: the caller decides about openid
        and launch.
        """
        granted: list[ResourceScope] = []
        for wanted in requested.resource_scopes:
            by_context: dict[Context, set[str]] = {}
            for allowed in self.resource_scopes:
                context = _meet(allowed.context, wanted.context)
                if context is None:
                    continue
                if allowed.resource_type != "*" and allowed.resource_type != wanted.resource_type:
                    continue
                by_context.setdefault(context, set()).update(
                    allowed.interactions & wanted.interactions
                )
            granted.extend(
                ResourceScope(context, wanted.resource_type, frozenset(letters))
                for context, letters in by_context.items()
                if letters
            )
        return ScopeSet(tuple(granted), requested.other)

    def union(self, other: ScopeSet) -> ScopeSet:
        """Everything either set allows (e.g. a user holding several roles)."""
        return ScopeSet(self.resource_scopes + other.resource_scopes, self.other | other.other)

    def has(self, scope: str) -> bool:
        """Membership of a non-resource scope, e.g. ``openid`` or ``launch/patient``."""
        return scope in self.other

    def __str__(self) -> str:
        """Space-separated canonical form, sorted, the same for equal sets (token ``scope``)."""
        return " ".join(sorted([*map(str, self.resource_scopes), *self.other]))
