"""FastAPI dependencies: the objects the composition root put on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_server.config import Settings
from fhir_server.errors import BadRequest
from fhir_server.model.ids import parse_etag
from fhir_server.services.resources import ResourceService


def get_service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.service
    return service


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def if_match_version(request: Request) -> int | None:
    """The version pinned by ``If-Match: W/"n"``; 400 when the header is not an ETag."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    version = parse_etag(header)
    if version is None:
        raise BadRequest(
            f'If-Match {header[:40]!r} is not an ETag like W/"3"', rofecare_code="rofecare-1509"
        )
    return version


Service = Annotated[ResourceService, Depends(get_service)]
AppSettings = Annotated[Settings, Depends(get_settings)]
IfMatch = Annotated[int | None, Depends(if_match_version)]
