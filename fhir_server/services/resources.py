"""The resource service: every create, update, patch and delete goes through here.

One write path (DESIGN.md): whatever door a change came through, it is validated here and
persisted as one prepared record, so a rule written here holds for all doors. Versions give
optimistic concurrency: a write names the version it replaces, the store refuses it if
another writer got there first, and the write is then re-prepared on the fresh version
(or answered 412 when the client pinned a version with If-Match).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson

from fhir_server.auth import policy
from fhir_server.auth.context import current_access
from fhir_server.definitions import Definitions
from fhir_server.definitions.registry import load_patient_compartment
from fhir_server.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Forbidden,
    Gone,
    InvalidResource,
    Issue,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
)
from fhir_server.model.ids import is_valid_id, new_id
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.model.resource import with_meta
from fhir_server.search.parser import SearchParser
from fhir_server.search.plan import SearchPlan
from fhir_server.search.values import ReferenceEntry
from fhir_server.services.audit_trail import AuditTrail
from fhir_server.services.content import apply_json_patch, without_server_meta
from fhir_server.services.criteria import parse_criteria
from fhir_server.services.locks import KeyedLocks
from fhir_server.services.rules import Change, RuleContext, RuleRegistry, Verdict
from fhir_server.services.search_index import SearchIndex
from fhir_server.services.staging import StagedWrites, active_stage
from fhir_server.services.stored_definitions import StoredDefinitions
from fhir_server.storage.base import (
    ConditionMatched,
    GuardViolated,
    HistoryPage,
    HistoryQuery,
    Method,
    ResourceStore,
    StoredVersion,
    VersionConflict,
    WriteRecord,
)
from fhir_server.validation.profiles import ProfileValidation
from fhir_server.validation.structure import StructureValidator

# Writes accepted in warn mode although they break the hospital's rules (``rofecare load``
# quiets it: its report lists them, entry by entry).
ACCEPTED_BREAKS_LOGGER = "rofecare.profiles"
broken_log = logging.getLogger(ACCEPTED_BREAKS_LOGGER)

# Writes of one resource queue inside a process (KeyedLocks); these retries cover the rarer
# race with another worker process on the same database, with a short random back-off.
MAX_ATTEMPTS = 20
_SEARCH_PARAMETERS_FRESH: ContextVar[bool] = ContextVar(
    "rofecare_search_parameters_fresh", default=False
)
# R4 gives these no RESTful endpoint: they only travel as operation input and output.
NOT_STORED = frozenset({"Parameters", "OperationOutcome"})
MAX_PATCH_OPERATIONS = 1_000


async def _back_off(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the version now current, whether it created the resource, and
    the warnings of what it wrote (profile guidance; in warn mode the rules it breaks)."""

    version: StoredVersion
    created: bool
    changed: bool = True
    warnings: tuple[Issue, ...] = ()


class ResourceService:
    def __init__(
        self,
        store: ResourceStore,
        definitions: Definitions,
        validator: StructureValidator,
        search_index: SearchIndex,
        *,
        allow_client_ids: bool = True,
        max_resource_bytes: int = 10 * 1024 * 1024,
        audit: AuditTrail | None = None,
        profiles: ProfileValidation | None = None,
        rules: RuleRegistry | None = None,
        index_later: bool = True,
    ) -> None:
        self._store = store
        self._index_later = index_later and search_index.enabled
        self.profiles = profiles
        self.rules = rules or RuleRegistry()
        self._audit = audit
        self._max_resource_bytes = max_resource_bytes
        self._definitions = definitions
        self._validator = validator
        self._search_index = search_index
        self._allow_client_ids = allow_client_ids
        self._locks = KeyedLocks()
        self.stored_definitions = StoredDefinitions(store, search_index, profiles)
        # Writes are indexed by the store, later (WriteRecord.index_later; audit_trail.py
        # composes its AuditEvents' entries).
        store.index_with(audit.index_entries if audit is not None else search_index.entries)

    # -- reads -----------------------------------------------------------------------------

    def known_type(self, resource_type: str) -> bool:
        return self._definitions.is_resource_type(resource_type) and resource_type not in NOT_STORED

    @property
    def search_parser(self) -> SearchParser:
        return self._search_index.parser

    async def claimants(self, keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """Who holds each key (storage/base.py, Claim), as committed: for the rules."""
        return await self._store.claimants(keys)

    async def unrestricted_search(self, plan: SearchPlan) -> list[StoredVersion]:
        """Matches of ``plan`` whatever the request's token may see: for the server's own
        rules, which must see every admission, never for an answer to a client."""
        return await self._matches(plan)

    def check_type(self, resource_type: str) -> None:
        """404 unless ``resource_type`` is an R4 type with a RESTful endpoint."""
        if not self.known_type(resource_type):
            raise NotFound(
                f"Unknown resource type {resource_type!r}", rofecare_code="rofecare-1101"
            )

    async def read(self, resource_type: str, resource_id: str) -> StoredVersion:
        """The current version; 404 if it never existed, 410 if its last version is a delete."""
        self.check_type(resource_type)
        policy.require(resource_type, "read")
        _check_id(resource_id)
        version = await self.current(resource_type, resource_id)
        if version is None:
            raise NotFound(
                f"{resource_type}/{resource_id} is not known", rofecare_code="rofecare-1102"
            )
        self._check_compartment(version, "read")
        if version.deleted:
            raise Gone(
                f"{resource_type}/{resource_id} was deleted",
                rofecare_code="rofecare-1103",
                headers={"ETag": f'W/"{version.version_id}"'},
            )
        return version

    async def vread(self, resource_type: str, resource_id: str, version_id: str) -> StoredVersion:
        self.check_type(resource_type)
        policy.require(resource_type, "read")
        _check_id(resource_id)
        if not version_id.isdigit() or len(version_id) > 18:
            raise NotFound(f"No version {version_id!r}", rofecare_code="rofecare-1104")
        version = await self._store.vread(resource_type, resource_id, int(version_id))
        if version is None:
            raise NotFound(
                f"{resource_type}/{resource_id} has no version {version_id}",
                rofecare_code="rofecare-1104",
            )
        self._check_compartment(version, "read")
        if version.deleted:
            raise Gone(
                f"Version {version_id} of {resource_type}/{resource_id} is a deletion",
                rofecare_code="rofecare-1103",
            )
        return version

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """History of an instance needs ``r`` on its type (and, under ``patient/`` scopes,
        every version in the patient's compartment); of a type or the whole system ``s``
        (SMART v2), and it is not offered under ``patient/`` scopes, which it could not
        confine without reading every version of every resource."""
        if query.resource_type is not None:
            self.check_type(query.resource_type)
        if query.resource_id is not None:
            assert query.resource_type is not None
            policy.require(query.resource_type, "read")
            _check_id(query.resource_id)
            current = await self._store.read(query.resource_type, query.resource_id)
            if current is None:
                raise NotFound(
                    f"{query.resource_type}/{query.resource_id} is not known",
                    rofecare_code="rofecare-1102",
                )
            self._check_compartment(current, "read")
            page = await self._store.history(query)
            for version in page.versions:  # an earlier version may belong to another patient
                self._check_compartment(version, "read")
            return page
        resource_type = query.resource_type or "*"
        policy.require(resource_type, "search")
        if policy.confining_patient(resource_type, "search") is not None:
            raise Forbidden(
                "History above the instance level is not available with patient/ scopes",
                rofecare_code="rofecare-3407",
            )
        return await self._store.history(query)

    def _check_change(self, current: StoredVersion, interaction: policy.Interaction) -> None:
        """The checks on the version a write replaces (update, patch, delete)."""
        policy.check_append_only(current.resource_type, exists=not current.deleted)
        self._check_compartment(current, interaction)
        if current.resource_type == "Encounter" and current.body is not None:
            policy.check_consultation_editor("Encounter", orjson.loads(current.body))

    def _check_compartment(self, version: StoredVersion, interaction: policy.Interaction) -> None:
        """Under patient/ scopes, the version must belong to the launch patient (its body,
        or for a deletion the fact that it is one: deletions carry no data)."""
        if policy.confining_patient(version.resource_type, interaction) is None:
            return
        if version.body is None:
            return
        body = orjson.loads(version.body)
        policy.check_in_compartment(
            version.resource_type, body, self._references(body), interaction
        )

    def _references(self, body: dict[str, Any]) -> set[tuple[str, str]]:
        """The relative references ``body`` holds in its Patient compartment parameters
        (an Observation's ``subject`` and ``performer``, not its ``focus``)."""
        links = set(load_patient_compartment().get(str(body.get("resourceType")), ()))
        return {
            (entry.target_type, entry.target_id)
            for entry in self._search_index.indexer.entries(body, only=links)
            if isinstance(entry, ReferenceEntry)
            and entry.target_type is not None
            and entry.target_id is not None
        }

    def condition(self, resource_type: str, criteria: str) -> SearchPlan:
        """The plan of conditional criteria: a search, held to the token's search scopes
        and compartment like any other (else a 412 or a match would reveal resources the
        token may not see)."""
        plan = parse_criteria(resource_type, criteria, self._search_index.parser)
        return policy.confine_plan(plan)

    async def find(self, resource_type: str, criteria: str) -> list[StoredVersion]:
        """Current resources matching conditional ``criteria``; at most two (enough for 412)."""
        self.check_type(resource_type)
        return await self._matches(self.condition(resource_type, criteria))

    async def _matches(self, plan: SearchPlan) -> list[StoredVersion]:
        return (await self._store.search(plan)).matches

    async def reload_search_parameters(self) -> None:
        await self.stored_definitions.reload_search_parameters()

    async def refresh_search_parameters(self) -> None:
        await self.stored_definitions.refresh_search_parameters()

    @contextlib.asynccontextmanager
    async def search_parameters_refreshed(self) -> AsyncIterator[None]:
        """The stored SearchParameters followed once for the writes of this context (a
        batch Bundle's entries), as a transaction does, not once per write: each look is
        a query on the event loop, ~5 % of a batch entry's time there."""
        await self.refresh_search_parameters()
        token = _SEARCH_PARAMETERS_FRESH.set(True)
        try:
            yield
        finally:
            _SEARCH_PARAMETERS_FRESH.reset(token)

    async def refresh_profiles(self) -> None:
        await self.stored_definitions.refresh_profiles()

    # -- validation ------------------------------------------------------------------------

    async def structure_issues(self, resource: Any, resource_type: str) -> list[Issue]:
        return await self._validator.validate_async(resource, resource_type)

    async def validate(self, resource: Any, resource_type: str) -> list[Issue]:
        """Raise 400 with every structural fault of ``resource``, then 422 with every fault
        against the profiles that govern it or that it claims (in the configured mode);
        else its warnings (``ProfileValidation.enforce``)."""
        issues = await self.structure_issues(resource, resource_type)
        if issues:
            raise InvalidResource(issues[0].diagnostics, issues=issues)
        if self.profiles is None or self.profiles.mode == "off":
            return []
        await self.refresh_profiles()
        return self.profiles.enforce(resource)

    async def validation_issues(
        self, resource: Any, resource_type: str, profiles: tuple[str, ...] = ()
    ) -> list[Issue]:
        """What ``$validate`` reports: the structural faults, or when there are none, the
        faults against the governing, claimed and asked-for ``profiles`` (any mode)."""
        issues = await self.structure_issues(resource, resource_type)
        if issues or self.profiles is None:
            return issues
        await self.refresh_profiles()
        return self.profiles.issues(resource, profiles)

    # -- writes ----------------------------------------------------------------------------

    async def create(
        self,
        resource_type: str,
        resource: Any,
        *,
        if_none_exist: str | None = None,
        assigned_id: str | None = None,
        unless_exists: str | None = None,
    ) -> WriteResult:
        """POST: a new resource with a server-assigned id (http.html#create).

        ``assigned_id``: the id chosen beforehand by the server itself, when a transaction
        must rewrite references to the new resource before creating it. ``unless_exists``:
        criteria the caller already searched and found no match for (a transaction decides
        its conditions first); the store checks them again as it writes."""
        self.check_type(resource_type)
        policy.require(resource_type, "create")
        warnings = await self.validate(without_server_meta(resource), resource_type)
        result = await self._create_valid(
            resource_type, resource, if_none_exist, assigned_id, unless_exists
        )
        return self._accepted(result, warnings)

    async def _create_valid(
        self,
        resource_type: str,
        resource: dict[str, Any],
        if_none_exist: str | None,
        assigned_id: str | None,
        unless_exists: str | None,
    ) -> WriteResult:
        if if_none_exist is None and unless_exists is not None and active_stage() is not None:
            # In a transaction the store's check fails the commit, which runs it all again.
            plan = self.condition(resource_type, unless_exists)
            return await self._create(resource_type, resource, assigned_id, plan)
        # Outside one (a batch entry), a match that appeared meanwhile is the answer.
        if_none_exist = if_none_exist or unless_exists
        if if_none_exist is None:
            return await self._create(resource_type, resource, assigned_id)
        query = self.condition(resource_type, if_none_exist)
        # The store checks the condition in the write transaction, for writers in every
        # process, so a type without hospital rules is written first and searched only when
        # that check finds a match. Searching first made each of a run of conditional creates
        # of one type (Synthea's hospitals and practitioners) wait for the index log of the
        # creates before it to be applied. A type with rules is searched first: a rule may
        # refuse the create (one patient per MRN) where a match is the answer.
        write_first = not self.rules.applies(resource_type)
        # Conditional writes with one condition queue here in this process.
        async with self._locks.hold(("condition", query.resource_types, query.where)):
            for _ in range(MAX_ATTEMPTS):
                if write_first:
                    try:
                        return await self._create(resource_type, resource, assigned_id, query)
                    except ConditionMatched:
                        pass  # answer with the match
                matches = await self._matches(query)
                if len(matches) > 1:
                    raise PreconditionFailed(
                        f"If-None-Exist matches more than one {resource_type}",
                        rofecare_code="rofecare-1201",
                    )
                if matches:
                    return WriteResult(matches[0], created=False, changed=False)
                if write_first:
                    continue  # the match was deleted meanwhile: write again
                try:
                    return await self._create(resource_type, resource, assigned_id, query)
                except ConditionMatched:
                    continue  # another process created a match meanwhile: answer with it
        raise _lost_race(resource_type, assigned_id or "(new)")

    async def _create(
        self,
        resource_type: str,
        resource: dict[str, Any],
        assigned_id: str | None = None,
        unless_exists: SearchPlan | None = None,
    ) -> WriteResult:
        resource = dict(resource)
        resource["id"] = assigned_id or new_id()
        return await self._put_version(
            resource_type, resource["id"], resource, None, "POST", unless_exists
        )

    async def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: Any,
        *,
        if_match: int | None = None,
        by_server: bool = False,
    ) -> WriteResult:
        """PUT to an id: a new version, or update-as-create for an unknown id (http.html#update).

        ``by_server``: the server's own write (its packaged conformance resources), which
        chooses its ids whether or not clients may."""
        self.check_type(resource_type)
        _check_id(resource_id)
        if isinstance(resource, dict):
            if "id" not in resource:
                raise BadRequest(
                    "An update must carry the resource id in the body",
                    expression=f"{resource_type}.id",
                    rofecare_code="rofecare-1202",
                )
            if resource["id"] != resource_id:
                raise BadRequest(
                    f"The body's id {resource['id']!r} differs from the URL's {resource_id!r}",
                    expression=f"{resource_type}.id",
                    rofecare_code="rofecare-1203",
                )
        warnings = await self.validate(without_server_meta(resource), resource_type)

        async def put(current: StoredVersion | None) -> WriteResult:
            exists = current is not None and not current.deleted
            policy.require(resource_type, "update" if exists else "create")
            if current is not None:
                self._check_change(current, "update")
            if current is None and not self._allow_client_ids and not by_server:
                raise MethodNotAllowed(
                    "This server assigns ids; create with POST", rofecare_code="rofecare-1204"
                )
            return await self._put_version(resource_type, resource_id, resource, current, "PUT")

        result = await self._versioned_write(resource_type, resource_id, if_match, put)
        return self._accepted(result, warnings)

    async def conditional_update(
        self, resource_type: str, criteria: str, resource: Any, *, if_match: int | None = None
    ) -> WriteResult:
        """PUT [type]?criteria (http.html#cond-update)."""
        self.check_type(resource_type)
        query = self.condition(resource_type, criteria)  # the scopes first, then the body
        warnings = await self.validate(without_server_meta(resource), resource_type)
        async with self._locks.hold(("condition", query.resource_types, query.where)):
            for _ in range(MAX_ATTEMPTS):
                try:
                    return await self._conditional_update(
                        resource_type, query, resource, if_match, warnings
                    )
                except ConditionMatched:
                    continue  # another process created a match meanwhile: update that one
        raise _lost_race(resource_type, "(new)")

    async def _conditional_update(
        self,
        resource_type: str,
        query: SearchPlan,
        resource: dict[str, Any],
        if_match: int | None,
        warnings: Sequence[Issue],
    ) -> WriteResult:
        """Update the match (``update`` validates and reports on its own), or create."""
        matches = await self._matches(query)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"The condition matches more than one {resource_type}",
                rofecare_code="rofecare-1205",
            )
        body_id = resource.get("id")
        if matches:
            target = matches[0].resource_id
            if body_id is not None and body_id != target:
                raise BadRequest(
                    f"The body's id {body_id!r} differs from the matched {target!r}",
                    expression=f"{resource_type}.id",
                    rofecare_code="rofecare-1203",
                )
            return await self.update(
                resource_type, target, {**resource, "id": target}, if_match=if_match
            )
        if if_match is not None:
            raise PreconditionFailed(
                f"If-Match names a version, but the condition matches no {resource_type}",
                rofecare_code="rofecare-1207",
            )
        if body_id is not None:
            existing = await self._store.read(resource_type, body_id)
            if existing is not None and not existing.deleted:
                raise PreconditionFailed(
                    f"{resource_type}/{body_id} exists but does not match the condition",
                    rofecare_code="rofecare-1209",
                )
            return await self.update(resource_type, body_id, resource)
        policy.require(resource_type, "create")
        result = await self._create(resource_type, resource, unless_exists=query)
        return self._accepted(result, warnings)

    async def patch(
        self,
        resource_type: str,
        resource_id: str,
        operations: Any,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """PATCH with a JSON Patch document (http.html#patch, RFC 6902)."""
        self.check_type(resource_type)
        _check_id(resource_id)
        if isinstance(operations, list) and len(operations) > MAX_PATCH_OPERATIONS:
            raise PayloadTooLarge(
                f"A patch may hold at most {MAX_PATCH_OPERATIONS} operations",
                rofecare_code="rofecare-1304",
            )
        if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
            raise BadRequest(
                "A JSON Patch body is an array of operations", rofecare_code="rofecare-1301"
            )

        policy.require(resource_type, "update")

        async def apply(current: StoredVersion | None) -> WriteResult:
            assert current is not None
            self._check_change(current, "update")
            if current.body is None:
                raise Gone(
                    f"{resource_type}/{resource_id} was deleted", rofecare_code="rofecare-1103"
                )
            patched = apply_json_patch(resource_type, resource_id, current.body, operations)
            warnings = await self.validate(without_server_meta(patched), resource_type)
            result = await self._put_version(resource_type, resource_id, patched, current, "PATCH")
            return self._accepted(result, warnings)

        return await self._versioned_write(
            resource_type, resource_id, if_match, apply, must_exist=True
        )

    async def delete(
        self, resource_type: str, resource_id: str, *, if_match: int | None = None
    ) -> WriteResult:
        """DELETE: a new version marking the resource gone (http.html#delete); idempotent."""
        self.check_type(resource_type)
        policy.require(resource_type, "delete")
        _check_id(resource_id)

        async def mark_deleted(current: StoredVersion | None) -> WriteResult:
            assert current is not None
            self._check_change(current, "delete")
            if current.deleted:
                return WriteResult(current, created=False, changed=False)
            verdict = await self.judge(resource_type, resource_id, None, current, "DELETE")
            record = WriteRecord(
                resource_type=resource_type,
                resource_id=resource_id,
                version_id=current.version_id + 1,
                previous_version=current.version_id,
                last_updated=_millis(now_utc()),
                method="DELETE",
                body=None,
                guards=tuple(verdict.guards),
                claims=self.rules.claims(resource_type, None),
            )
            companions = await self._companions(verdict)
            version = await self._persist(record, companions)
            return self._accepted(
                WriteResult(version, created=False, warnings=tuple(verdict.warnings)), ()
            )

        return await self._versioned_write(
            resource_type, resource_id, if_match, mark_deleted, must_exist=True
        )

    async def conditional_delete(self, resource_type: str, criteria: str) -> WriteResult | None:
        """DELETE [type]?criteria: one match is deleted, several are 412 (conditional single)."""
        matches = await self.find(resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"The condition matches more than one {resource_type}",
                rofecare_code="rofecare-1206",
            )
        if not matches:
            return None
        return await self.delete(resource_type, matches[0].resource_id)

    async def _versioned_write(
        self,
        resource_type: str,
        resource_id: str,
        if_match: int | None,
        step: Callable[[StoredVersion | None], Awaitable[WriteResult]],
        *,
        must_exist: bool = False,
    ) -> WriteResult:
        """Run ``step`` on the current version, holding the resource's lock in this process.

        When another process wrote first, the store refuses the write and ``step`` runs
        again on the fresh version, unless the client pinned a version with If-Match (412).
        """
        async with self._locks.hold((resource_type, resource_id)):
            for attempt in range(MAX_ATTEMPTS):
                current = await self.current(resource_type, resource_id)
                if must_exist and current is None:
                    raise NotFound(
                        f"{resource_type}/{resource_id} is not known",
                        rofecare_code="rofecare-1102",
                    )
                _check_if_match(if_match, current)
                try:
                    return await step(current)
                except VersionConflict:
                    if if_match is not None:
                        raise _lost_race(resource_type, resource_id, pinned=True) from None
                    await _back_off(attempt)
        raise _lost_race(resource_type, resource_id)

    async def _put_version(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        current: StoredVersion | None,
        method: Method,
        unless_exists: SearchPlan | None = None,
    ) -> WriteResult:
        """Persist ``resource`` as the version after ``current`` (None: a new resource),
        as the hospital's rules have it (they may refuse it, add to it, guard it and write
        companions with it)."""
        verdict = await self.judge(
            resource_type, resource_id, {**resource, "id": resource_id}, current, method
        )
        assert verdict.resource is not None
        record = await self._prepare(
            resource_type, resource_id, verdict.resource, current, method, unless_exists
        )
        if verdict.guards or verdict.claims:
            record = replace(record, guards=tuple(verdict.guards), enforced=tuple(verdict.claims))
        companions = await self._companions(verdict)
        version = await self._persist(record, companions)
        created = current is None or current.deleted
        return WriteResult(version, created=created, warnings=tuple(verdict.warnings))

    def _accepted(self, result: WriteResult, warnings: Sequence[Issue]) -> WriteResult:
        """``result`` with the warnings of the content it wrote (none when it wrote nothing:
        a conditional create that found its match). A write accepted in warn mode although
        it breaks the hospital's rules (its demoted faults) is also logged, by keys and ids
        (never content: it may be patient data), for the operator; its client gets the
        issues themselves."""
        if not result.changed or not (warnings or result.warnings):
            return result
        combined = tuple(dict.fromkeys((*warnings, *result.warnings)))
        broken = {issue.key or issue.rofecare_code or "?" for issue in combined if issue.demoted}
        if broken:
            version = result.version
            broken_log.warning(
                "%s/%s accepted although it breaks %s (ROFECARE_PROFILE_VALIDATION=warn)",
                version.resource_type,
                version.resource_id,
                ", ".join(sorted(broken)),
            )
        return replace(result, warnings=combined)

    async def judge(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        current: StoredVersion | None,
        method: Method,
    ) -> Verdict:
        """What the hospital's rules make of this write (they may raise), in the mode."""
        mode = self.profiles.mode if self.profiles is not None else "enforce"
        if mode == "off" or not self.rules.applies(resource_type):
            return Verdict(resource)
        previous = (
            orjson.loads(current.body) if current is not None and current.body is not None else None
        )
        change = Change(resource_type, resource_id, resource, previous, method)
        return await self.rules.judge(change, RuleContext(self), enforce=mode == "enforce")

    async def _companions(self, verdict: Verdict) -> list[WriteRecord]:
        """The records of what the rules write beside the resource (a Flag for an
        out-of-range result): created, or updated when they exist already."""
        records = []
        for companion in verdict.companions:
            resource_type, resource_id = companion["resourceType"], companion["id"]
            current = await self.current(resource_type, resource_id)
            method: Method = "PUT" if current is not None else "POST"
            records.append(
                await self._prepare(resource_type, resource_id, companion, current, method)
            )
        return records

    async def _prepare(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        current: StoredVersion | None,
        method: Method,
        unless_exists: SearchPlan | None = None,
    ) -> WriteRecord:
        moment = now_utc()
        current_version = current.version_id if current else 0
        version_id = current_version + 1
        body = with_meta({**resource, "id": resource_id}, version_id, to_instant(moment))
        if resource_type == "SearchParameter":
            self._search_index.check_definition(body)
        if active_stage() is None and not _SEARCH_PARAMETERS_FRESH.get():
            await self.refresh_search_parameters()  # else done once for the whole Bundle
        data = orjson.dumps(body)
        if len(data) > self._max_resource_bytes:
            raise PayloadTooLarge(
                f"The resource would be {len(data)} bytes; the limit is {self._max_resource_bytes}",
                rofecare_code="rofecare-1507",
            )
        if self._index_later:  # the store computes the rest (WriteRecord.index_later)
            entries, text = self._search_index.write_entries(body), None
        else:
            entries, text = self._search_index.entries(body)
        if policy.confining_patient(resource_type, "create" if current is None else "update"):
            policy.check_in_compartment(
                resource_type,
                body,
                self._references(body),
                "create" if current is None else "update",
            )
        return WriteRecord(
            resource_type=resource_type,
            resource_id=resource_id,
            version_id=version_id,
            previous_version=current_version,
            last_updated=_millis(moment),
            method=method,
            body=data,
            entries=entries,
            full_text=text,
            unless_exists=unless_exists,
            claims=self.rules.claims(resource_type, body),
            index_later=self._index_later,
        )

    async def _persist(
        self, record: WriteRecord, companions: Sequence[WriteRecord] = ()
    ) -> StoredVersion:
        """Write ``record`` (and its companions) now, or hold them in the active stage (a
        transaction Bundle)."""
        stage = active_stage()
        if stage is not None:
            return stage.add(record, *companions)
        records = [record, *companions]
        try:
            await self._store.write(self._audited(records))
        except GuardViolated as violated:
            raise _guard_conflict(violated) from None
        if any(item.resource_type == "SearchParameter" for item in records):
            await self.reload_search_parameters()
        return record.as_version()

    def _audited(
        self, records: list[WriteRecord], interaction: str | None = None
    ) -> list[WriteRecord]:
        """``records`` and their AuditEvent, to commit in one transaction: of the first
        record's interaction (a create that writes a Flag beside its Observation is still
        a create), or of ``interaction`` (a transaction, a group of batch writes)."""
        if self._audit is None or not records:
            return records
        return [*records, self._audit.for_writes(records, current_access(), interaction)]

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The current version (deleted or not), as staged in this transaction if it was."""
        stage = active_stage()
        staged = stage.version(resource_type, resource_id) if stage is not None else None
        if staged is not None:
            return staged
        return await self._store.read(resource_type, resource_id)

    async def commit_stage(self, stage: StagedWrites, interaction: str = "transaction") -> None:
        """Persist every staged record in one storage transaction (VersionConflict if any
        resource changed since it was staged: nothing is written then), with one
        AuditEvent of the ``interaction`` (a transaction, or a group of batch entries)."""
        if stage.records:
            try:
                await self._store.write(self._audited(stage.records, interaction))
            except GuardViolated as violated:
                raise _guard_conflict(violated) from None
        if stage.search_parameters_changed:
            await self.reload_search_parameters()


def _guard_conflict(violated: GuardViolated) -> Conflict:
    """Another writer got there first: the rule's own refusal, as a 409."""
    return Conflict(violated.guard.message, rofecare_code=violated.guard.code)


def _millis(moment: datetime) -> datetime:
    """Truncate to the millisecond kept in meta.lastUpdated, so store and body agree."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _check_id(resource_id: str) -> None:
    if not is_valid_id(resource_id):
        raise BadRequest(
            f"Invalid resource id {resource_id[:80]!r}: 1-64 letters, digits, '-' or '.'",
            rofecare_code="rofecare-1105",
        )


def _check_if_match(if_match: int | None, current: StoredVersion | None) -> None:
    if if_match is None:
        return
    if current is None or current.version_id != if_match:
        now = current.version_id if current else "none"
        raise PreconditionFailed(
            f"If-Match asked for version {if_match}, the current version is {now}",
            rofecare_code="rofecare-1207",
        )


def _lost_race(resource_type: str, resource_id: str, *, pinned: bool = False) -> FhirError:
    """412 when the client pinned a version with If-Match, else 409 (busy resource)."""
    error = PreconditionFailed if pinned else Conflict
    return error(
        f"{resource_type}/{resource_id} was changed by another request; read it and retry",
        rofecare_code="rofecare-1208",
    )
