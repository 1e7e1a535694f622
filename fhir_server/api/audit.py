"""The audit of reads at the HTTP doors: what the current access was given."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request

from fhir_server.auth.context import current_access
from fhir_server.services.audit_trail import AuditTrail
from fhir_server.storage.base import StoredVersion


async def audit_read(
    request: Request,
    interaction: str,
    versions: Iterable[StoredVersion],
    *,
    query: str | None = None,
) -> None:
    """Queue the AuditEvent of a read (no-op without an access context: authentication
    off). ``query``: the search's parameters, recorded with it."""
    access = current_access()
    if access is None:
        return
    trail: AuditTrail = request.app.state.audit
    await trail.read(access, interaction, versions, query)
