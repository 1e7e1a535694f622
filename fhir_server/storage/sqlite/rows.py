"""Rows of ``resource_version`` as ``StoredVersion`` objects."""

from __future__ import annotations

from typing import Any

from fhir_server.model.instant import from_micros
from fhir_server.storage.base import Method, StoredVersion

VERSION_COLUMNS = "v.resource_type, v.id, v.version_id, v.last_updated_us, v.method, v.body"


def version_of(row: tuple[Any, ...] | Any) -> StoredVersion:
    method: Method = row[4]
    return StoredVersion(
        resource_type=row[0],
        resource_id=row[1],
        version_id=row[2],
        last_updated=from_micros(row[3]),
        method=method,
        body=row[5],
    )
