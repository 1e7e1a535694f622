"""The packaged profiles, code systems and value sets published as resources.

Issue 7 asks that Rofecare's profiles be served at ``/fhir/StructureDefinition`` like any
other conformance resource, so a client reads, searches (``?url=``, ``?type=``) and
``$validate``s against what the server enforces. At start-up each packaged definition is
written under its own id when the store lacks it or holds another content; an unchanged
one is left alone, so restarts and the workers of one deployment add no versions.
The packaged definitions stay the ones in force (the registry compiled them from the
package), so a stored copy is what the server enforces, for reading; with profile
validation off none is in force, and none is published.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from fhir_server.services.content import without_server_meta
from fhir_server.services.resources import ResourceService
from fhir_server.services.staging import end_stage, start_stage
from fhir_server.storage.base import VersionConflict

log = logging.getLogger("rofecare.profiles")
PUBLISH_ATTEMPTS = 5


async def publish_conformance(service: ResourceService, definitions: list[dict[str, Any]]) -> int:
    """Write every packaged resource that the store lacks or holds differently, in one
    transaction (one AuditEvent, and a crash publishes all or nothing); how many.

    The workers of one deployment start together on one store: when another one published
    first (VersionConflict), its transaction is read back and only what still differs is
    written, so a fresh ``serve --workers 2`` never fails its start on the race."""
    for attempt in range(PUBLISH_ATTEMPTS):
        stage, token = start_stage()
        try:
            written = await _stage_changes(service, definitions)
            await service.commit_stage(stage)
        except VersionConflict:
            if attempt + 1 == PUBLISH_ATTEMPTS:
                raise
            continue
        finally:
            end_stage(token)
        if written:
            log.info("published %d packaged conformance resource(s)", written)
        return written
    raise AssertionError("unreachable")  # pragma: no cover


async def _stage_changes(service: ResourceService, definitions: list[dict[str, Any]]) -> int:
    written = 0
    for definition in definitions:
        resource_type = str(definition["resourceType"])
        resource_id = str(definition.get("id") or definition.get("name"))
        current = await service.current(resource_type, resource_id)
        if current is not None and current.body is not None:
            stored = without_server_meta(orjson.loads(current.body))
            if _same(stored, definition):
                continue
        staged = await service.update(
            resource_type, resource_id, {**definition, "id": resource_id}, by_server=True
        )
        # The update reads the store again: another worker's publication committed in
        # between makes it a second version of what that worker just wrote. Start over
        # (the caller's retry), comparing with what is stored now.
        expected = (current.version_id if current is not None else 0) + 1
        if staged.version.version_id != expected:
            raise VersionConflict(resource_type, resource_id, staged.version.version_id - 1)
        written += 1
    return written


def _same(stored: dict[str, Any], packaged: dict[str, Any]) -> bool:
    return orjson.dumps(stored, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        {**packaged, "id": stored.get("id")}, option=orjson.OPT_SORT_KEYS
    )
