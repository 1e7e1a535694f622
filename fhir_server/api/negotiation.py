"""Content negotiation: ``_format``, ``Accept``, ``_pretty`` and request media types.

Rofecare speaks FHIR JSON only (https://hl7.org/fhir/R4/http.html#mime-type); a request for
XML or Turtle gets 406 rather than JSON it did not ask for.
"""

from __future__ import annotations

from fastapi import Request

from fhir_server.errors import NotAcceptable, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
_JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir"}
_FORMAT_ALIASES = {"json": FHIR_JSON, FHIR_JSON: FHIR_JSON, "application/json": "application/json"}
_NON_JSON = ("xml", "turtle", "ttl", "html", "text/", "rdf")


def response_media_type(request: Request) -> str:
    """The media type to answer with; 406 when the client accepts no JSON."""
    requested = request.query_params.get("_format")
    if requested is not None:
        media = _FORMAT_ALIASES.get(requested.split(";")[0].strip().lower())
        if media is None:
            raise NotAcceptable(
                f"_format={requested!r} is not supported; this server speaks JSON only",
                rofecare_code="rofecare-1501",
            )
        return media
    accept = request.headers.get("accept")
    if not accept:
        return FHIR_JSON
    ranges = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for media in ranges:
        if media in (FHIR_JSON, "application/json+fhir", "*/*", "application/*"):
            return FHIR_JSON
        if media == "application/json":
            return "application/json"
    if ranges and all(any(word in media for word in _NON_JSON) for media in ranges if media):
        raise NotAcceptable(
            f"Accept {accept[:100]!r} lists no JSON type; this server speaks JSON only",
            rofecare_code="rofecare-1502",
        )
    return FHIR_JSON


def is_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "false").lower() == "true"


def require_json_body(request: Request, *, patch: bool = False) -> None:
    """415 unless the body is FHIR JSON (or a JSON Patch for PATCH)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return  # lenient: a body without a type is read as JSON and validated as such
    media = content_type.split(";")[0].strip().lower()
    allowed = {JSON_PATCH} if patch else _JSON_TYPES
    if media not in allowed:
        expected = JSON_PATCH if patch else FHIR_JSON
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported here; send {expected}",
            rofecare_code="rofecare-1503",
        )
