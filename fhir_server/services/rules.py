"""Hospital rules that need other resources, run inside the one write path.

A profile judges one resource alone; "at most one active admission per patient" or "a
prescription only within a consultation" need the store. Such rules are interventions
(CONVENTIONS.md rule 8): they run inside the write, after structure and profile
validation, for every door (REST, transaction and batch entries, operations, HL7, DICOM),
and decide. A rule may refuse (it raises a FhirError with its rofecare code and the path
of the fault), add to the resource (an automatic interpretation), write companions in the
same transaction (a Flag), and guard the write: a ``WriteGuard`` asks the store to check,
inside the write transaction, that no other current resource conflicts, which is what
makes "exactly one of two simultaneous registrations wins" true across worker processes.
A rule that can say its conflict as a key (a medical record number in its system) claims
it instead (``ClaimingRule``, ``Claim``): the store keeps every resource's claims and
checks one with a key lookup, where a guard searches.

Rules live with the profiles of their bounded context (``profiles/<context>/rules.py``);
the core loads them by name at start-up (``RuleRegistry.load``) and never imports them.
Rules see every resource whatever the writer's token allows: a receptionist admitting a
patient cannot see the ward's other admissions, but the rule must.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import orjson

from fhir_server.auth.context import Access, current_access
from fhir_server.errors import FhirError, Issue
from fhir_server.model.outcome import as_warning
from fhir_server.search.plan import SearchPlan
from fhir_server.services.criteria import parse_criteria
from fhir_server.services.staging import active_stage
from fhir_server.storage.base import Claim, StoredVersion, WriteGuard

__all__ = ["Change", "Claim", "ClaimingRule", "Rule", "RuleContext", "RuleRegistry", "Verdict"]

if TYPE_CHECKING:
    from fhir_server.services.resources import ResourceService

SEARCH_LIMIT = 100  # a rule asking for more is asking the wrong question


@dataclass(frozen=True)
class Change:
    """What a write is about to do: ``resource`` (None: a delete) replaces ``previous``
    (None: nothing current, a create)."""

    resource_type: str
    resource_id: str
    resource: dict[str, Any] | None
    previous: dict[str, Any] | None
    method: str

    @property
    def is_create(self) -> bool:
        return self.previous is None


@dataclass
class Verdict:
    """What the rules made of a change: the content to write (interventions may add to
    it), the guards the store must check, and companions written in the same transaction."""

    resource: dict[str, Any] | None
    guards: list[WriteGuard] = field(default_factory=list)
    companions: list[dict[str, Any]] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)  # the store checks them (enforced)
    warnings: list[Issue] = field(default_factory=list)  # refusals, in warn mode


class Rule(Protocol):
    @property
    def code(self) -> str:
        """rofecare-19NN: what a refusal carries."""
        ...

    @property
    def title(self) -> str:
        """The rule in one line, for docs/profiles.md."""
        ...

    @property
    def resource_types(self) -> frozenset[str]: ...

    async def check(self, change: Change, context: RuleContext, verdict: Verdict) -> None: ...


class ClaimingRule(Rule, Protocol):
    """A rule whose conflict is a key: ``claims`` says which keys a resource holds. They
    are kept for every version of its types, whatever the rules mode (so a resource written
    with ROFECARE_PROFILE_VALIDATION=off still counts once the rules are back), and the
    rule enforces them by adding a ``Claim`` of each to the verdict."""

    def claims(self, resource: dict[str, Any]) -> list[str]: ...


class RuleContext:
    """What a rule may ask of the store: current content, staged writes of the running
    transaction first, and searches, unrestricted by the writer's scopes."""

    def __init__(self, service: ResourceService) -> None:
        self._service = service

    @property
    def access(self) -> Access | None:
        """Who writes (None: the server itself, or authentication off)."""
        return current_access()

    async def read(self, reference: Any) -> dict[str, Any] | None:
        """The current content a relative reference (``Patient/1``, or a Reference) names;
        None when it names nothing current here (absent, deleted, absolute, contained)."""
        target = reference.get("reference") if isinstance(reference, dict) else reference
        if not isinstance(target, str) or target.count("/") != 1:
            return None
        resource_type, resource_id = target.split("/")
        if not self._service.known_type(resource_type):
            return None
        return _content(await self._service.current(resource_type, resource_id))

    def plan(self, resource_type: str, criteria: Sequence[tuple[str, str]]) -> SearchPlan:
        """A search plan (for a guard) from FHIR search parameters, values unescaped."""
        query = urlencode(list(criteria))
        return parse_criteria(resource_type, query, self._service.search_parser)

    def guard(
        self,
        resource_type: str,
        criteria: Sequence[tuple[str, str]],
        *,
        lock: str,
        code: str,
        message: str,
        tolerated: Sequence[dict[str, Any]] = (),
    ) -> WriteGuard:
        """A guard: no other current ``resource_type`` may match ``criteria`` once the
        write commits (checked by the store in the write transaction, under ``lock``),
        except the ``tolerated`` resources as the rule read them (matches of the coarser
        search that the rule judged harmless; if one changes meanwhile, it counts)."""
        versions = frozenset(
            (str(item["resourceType"]), str(item["id"]), int(item["meta"]["versionId"]))
            for item in tolerated
            if isinstance(item.get("meta"), dict) and "versionId" in item["meta"]
        )
        return WriteGuard(self.plan(resource_type, criteria), lock, code, message, versions)

    async def search(
        self, resource_type: str, criteria: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        """Current resources matching ``criteria`` (at most SEARCH_LIMIT), as staged in
        this transaction when it changed them. Resources only staged are not searched:
        ``staged`` gives them, and the rule tests their content itself."""
        plan = replace(self.plan(resource_type, criteria), count=SEARCH_LIMIT)
        stage = active_stage()
        found = []
        for version in await self._service.unrestricted_search(plan):
            staged = stage.version(version.resource_type, version.resource_id) if stage else None
            content = _content(staged or version)
            if content is not None:
                found.append(content)
        return found

    async def others(
        self,
        change: Change,
        criteria: Sequence[tuple[str, str]],
        keep: Callable[[dict[str, Any]], bool],
        resource_type: str | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The other resources a rule weighs against ``change``: (what the search found,
        for a guard to tolerate; those of them and of this transaction's staged writes
        that ``keep``, the rule's exact test, retains), never the resource being written.
        A search can only be coarser than the rule; ``keep`` says what it means."""
        resource_type = resource_type or change.resource_type
        found = await self.search(resource_type, criteria)
        kept = [
            other
            for other in [*found, *self.staged(resource_type)]
            if other.get("id") != change.resource_id and keep(other)
        ]
        return found, kept

    async def claimed(
        self,
        change: Change,
        key: str,
        keep: Callable[[dict[str, Any]], bool],
        resource_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """The other resources holding ``key`` (a ``Claim``): those the store names and
        this transaction's staged writes, as staged, that ``keep`` retains; never the
        resource being written."""
        resource_type = resource_type or change.resource_type
        holders = (await self._service.claimants([key])).get(key, [])
        found: dict[str, dict[str, Any]] = {}
        for holder_type, holder_id in holders:
            content = _content(await self._service.current(holder_type, holder_id))
            if content is not None:
                found[f"{holder_type}/{holder_id}"] = content
        for other in self.staged(resource_type):
            found[f"{resource_type}/{other.get('id')}"] = other
        return [
            other
            for reference, other in found.items()
            if reference != f"{change.resource_type}/{change.resource_id}" and keep(other)
        ]

    def staged(self, resource_type: str) -> list[dict[str, Any]]:
        """The current content of every ``resource_type`` this transaction has staged."""
        stage = active_stage()
        if stage is None:
            return []
        latest: dict[str, bytes | None] = {}
        for record in stage.records:
            if record.resource_type == resource_type:
                latest[record.resource_id] = record.body
        return [orjson.loads(body) for body in latest.values() if body is not None]


class RuleRegistry:
    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self._by_type: dict[str, list[Rule]] = {}
        self._claiming: dict[str, list[ClaimingRule]] = {}
        self._rules: list[Rule] = []
        for rule in rules:
            self.add(rule)

    def add(self, rule: Rule) -> None:
        if any(known.code == rule.code for known in self._rules):
            raise ValueError(f"Two rules share the code {rule.code}")
        self._rules.append(rule)
        for resource_type in rule.resource_types:
            self._by_type.setdefault(resource_type, []).append(rule)
            if callable(getattr(rule, "claims", None)):
                self._claiming.setdefault(resource_type, []).append(rule)  # type: ignore[arg-type]

    def load(self, plugins: Sequence[str]) -> None:
        """Import each plug-in package by name and call its ``register(registry)``."""
        for name in plugins:
            module = importlib.import_module(name)
            register = getattr(module, "register_rules", None)
            if register is not None:
                register(self)

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules)

    def applies(self, resource_type: str) -> bool:
        return resource_type in self._by_type

    def claims(self, resource_type: str, resource: dict[str, Any] | None) -> tuple[str, ...] | None:
        """The keys a version holds (None: its type claims nothing; a deletion holds none)."""
        rules = self._claiming.get(resource_type)
        if not rules:
            return None
        if resource is None:
            return ()
        return tuple(sorted({key for rule in rules for key in rule.claims(resource)}))

    async def judge(self, change: Change, context: RuleContext, *, enforce: bool = True) -> Verdict:
        """Run every rule of the change's type in turn, each seeing what the ones before it
        made of the resource. ``enforce`` False (ROFECARE_PROFILE_VALIDATION=warn): a
        refusal becomes the verdict's warnings and the write goes on, unguarded;
        interventions still apply."""
        verdict = Verdict(change.resource)
        for rule in self._by_type.get(change.resource_type, ()):
            current = Change(
                change.resource_type,
                change.resource_id,
                verdict.resource,
                change.previous,
                change.method,
            )
            if enforce:
                await rule.check(current, context, verdict)
                continue
            try:
                await rule.check(current, context, verdict)
            except FhirError as refusal:
                verdict.warnings.extend(as_warning(issue) for issue in refusal.issues)
            verdict.guards.clear()
            verdict.claims.clear()
        return verdict


def _content(version: StoredVersion | None) -> dict[str, Any] | None:
    if version is None or version.body is None:
        return None
    content: dict[str, Any] = orjson.loads(version.body)
    return content
