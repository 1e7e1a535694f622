"""Reading request bodies safely: a size cap before parsing, strict JSON, bounded depth."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from fhir_server.errors import BadRequest, PayloadTooLarge


async def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body; 413 past ``max_bytes`` (checked while streaming), 400 if malformed.

    orjson refuses documents nested deeper than 1024 levels, so a 10,000-deep body is a 400
    and never a RecursionError.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Invalid Content-Length", rofecare_code="rofecare-1504")
        if int(declared) > max_bytes:
            raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("The request has no body", rofecare_code="rofecare-1505")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadRequest(
            f"The body is not valid JSON: {error}", rofecare_code="rofecare-1506"
        ) from error


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is larger than the {max_bytes} bytes this server accepts",
        rofecare_code="rofecare-1507",
    )
