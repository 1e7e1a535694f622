"""Every error leaves as an OperationOutcome (https://hl7.org/fhir/R4/http.html#Status-Codes).

Unexpected exceptions become a 500 whose body names only a request id; the traceback goes to
the server log under that id, never to the client.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fhir_server.errors import FhirError, Issue
from fhir_server.model.outcome import operation_outcome

log = logging.getLogger("rofecare.api")

_STATUS_ISSUES = {
    400: ("invalid", "rofecare-1400"),
    404: ("not-found", "rofecare-1404"),
    405: ("not-supported", "rofecare-1405"),
    413: ("too-costly", "rofecare-1413"),
}


def outcome_response(
    issues: list[Issue], status: int, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps(operation_outcome(issues))
    return Response(body, status, headers, media_type="application/fhir+json; charset=utf-8")


async def fhir_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, FhirError)
    return outcome_response(error.issues, error.status, error.headers)


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code, rofecare_code = _STATUS_ISSUES.get(error.status_code, ("processing", "rofecare-1000"))
    if error.status_code == 404:
        text = f"No FHIR interaction at {request.url.path[:200]!r}"
    elif error.status_code == 405:
        text = f"{request.method} is not supported at {request.url.path[:200]!r}"
    else:
        text = str(error.detail)
    issue = Issue("error", code, text, rofecare_code)
    return outcome_response([issue], error.status_code, dict(error.headers or {}))


async def request_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    issues = [
        Issue("error", "invalid", str(item.get("msg", "invalid request")), "rofecare-1400")
        for item in error.errors()[:20]
    ]
    return outcome_response(issues, 400)


async def unexpected_error(request: Request, error: Exception) -> Response:
    request_id = uuid.uuid4().hex
    log.exception("unexpected error, request id %s", request_id, exc_info=error)
    issue = Issue(
        "fatal",
        "exception",
        f"Internal server error; quote request id {request_id} to the administrator",
        "rofecare-1500",
    )
    return outcome_response([issue], 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, fhir_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.add_exception_handler(Exception, unexpected_error)
