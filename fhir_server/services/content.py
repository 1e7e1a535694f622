"""What the server does to a request body before it becomes a version.

Shared by the write path and ``$validate``, so both see exactly the same resource.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson

from fhir_server.errors import BadRequest, Unprocessable


def apply_json_patch(
    resource_type: str, resource_id: str, body: bytes, operations: list[Any]
) -> dict[str, Any]:
    """The resource after RFC 6902 ``operations``; id and type must stay what they were."""
    try:
        patched = jsonpatch.JsonPatch(operations).apply(orjson.loads(body), in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        raise Unprocessable(
            f"The patch cannot be applied: {error}", rofecare_code="rofecare-1302"
        ) from error
    except (TypeError, ValueError, KeyError, IndexError) as error:
        raise BadRequest(f"Malformed JSON Patch: {error}", rofecare_code="rofecare-1301") from error
    if not isinstance(patched, dict) or patched.get("resourceType") != resource_type:
        raise Unprocessable(
            "A patch must not change resourceType",
            expression=f"{resource_type}.resourceType",
            rofecare_code="rofecare-1303",
        )
    if patched.get("id") != resource_id:
        raise Unprocessable(
            "A patch must not change the id",
            expression=f"{resource_type}.id",
            rofecare_code="rofecare-1303",
        )
    return patched


def without_server_meta(resource: Any) -> Any:
    """Server-owned meta fields are replaced, never validated as the client sent them."""
    if isinstance(resource, dict) and isinstance(resource.get("meta"), dict):
        meta = {
            k: v
            for k, v in resource["meta"].items()
            if k not in ("versionId", "lastUpdated", "_versionId", "_lastUpdated")
        }
        resource = dict(resource)
        if meta:
            resource["meta"] = meta
        else:
            resource.pop("meta")
    return resource
