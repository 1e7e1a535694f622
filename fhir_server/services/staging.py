"""Staged writes: several service writes committed together, or not at all.

A transaction Bundle (https://hl7.org/fhir/R4/http.html#trules) must go through the same
write path as single interactions (validation, versioning, indexing; DESIGN.md "One write
path") yet succeed or fail as a whole. So the service keeps writing as usual, but while a
``StagedWrites`` is active in the current task (a context variable, so concurrent requests
never see each other's stage), each prepared record is held here instead of being sent to
the store; later writes in the same stage read the staged versions; and the caller commits
every record in one storage transaction at the end. A conflict found at commit (another
writer changed a resource meanwhile) fails the whole stage.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from fhir_server.errors import BadRequest
from fhir_server.storage.base import StoredVersion, WriteRecord

_active: ContextVar[StagedWrites | None] = ContextVar("rofecare_staged_writes", default=None)


ONE_WRITE_PER_RESOURCE = "rofecare-2404"  # a second entry writing a staged resource


@dataclass
class StagedWrites:
    records: list[WriteRecord] = field(default_factory=list)
    versions: dict[tuple[str, str], StoredVersion] = field(default_factory=dict)
    search_parameters_changed: bool = False

    def add(self, record: WriteRecord, *companions: WriteRecord) -> StoredVersion:
        """Hold ``record`` and what a rule writes with it, all or none; a second write of one
        resource in one transaction is refused (http.html#trules: a resource may be the
        target of only one entry). All or none: a batch entry refused so runs after its
        group (services/bundles.py), and must not have left its record in the group."""
        held = (record, *companions)
        keys = [(each.resource_type, each.resource_id) for each in held]
        for key in keys:
            if key in self.versions or keys.count(key) > 1:
                raise BadRequest(
                    f"{key[0]}/{key[1]} is written by more than one entry of the transaction",
                    rofecare_code=ONE_WRITE_PER_RESOURCE,
                )
        for key, each in zip(keys, held, strict=True):
            self.records.append(each)
            self.versions[key] = each.as_version()
            if each.resource_type == "SearchParameter":
                self.search_parameters_changed = True
        return self.versions[keys[0]]

    def version(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return self.versions.get((resource_type, resource_id))


def active_stage() -> StagedWrites | None:
    return _active.get()


def start_stage() -> tuple[StagedWrites, Token[StagedWrites | None]]:
    """Make a new stage active in this task; returns it and the token that ends it."""
    stage = StagedWrites()
    return stage, _active.set(stage)


def end_stage(token: Token[StagedWrites | None]) -> None:
    _active.reset(token)
