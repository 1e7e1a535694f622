"""Logical ids and versions (https://hl7.org/fhir/R4/datatypes.html#id)."""

from __future__ import annotations

import re
import uuid

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
ETAG_PATTERN = re.compile(r'\s*(?:W/)?"([1-9][0-9]{0,17})"\s*')


def is_valid_id(value: str) -> bool:
    """True for a FHIR id: 1-64 of letters, digits, '-' and '.'; rejects '../' and SQL text."""
    return ID_PATTERN.fullmatch(value) is not None and value not in (".", "..")


def new_id() -> str:
    """A server-assigned id: random, unguessable, 36 characters."""
    return str(uuid.uuid4())


def weak_etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_etag(value: str) -> int | None:
    """The version in an ETag such as ``W/"3"`` or ``"3"``; None when it is not one."""
    match = ETAG_PATTERN.fullmatch(value)
    return int(match.group(1)) if match else None
