"""Criteria of conditional create, update and delete (https://hl7.org/fhir/R4/http.html#ccreate).

Conditions are ordinary search parameters, parsed by the search engine in strict mode: an
unknown or unsupported parameter is a 400 rather than ignored, because ignoring a condition
would widen the match and touch the wrong resource.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest
from fhir_server.search.parser import SearchParser
from fhir_server.search.plan import SearchPlan

MATCHES_NEEDED = 2  # one match is acted on; a second one makes the condition ambiguous (412)


def parse_criteria(resource_type: str, query: str, parser: SearchParser) -> SearchPlan:
    """``identifier=http://mrn|123&birthdate=1970`` -> a plan returning at most two matches."""
    try:
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True, strict_parsing=True)
    except ValueError as error:
        raise BadRequest(f"Malformed condition {query!r}", rofecare_code="rofecare-2001") from error
    for name, value in pairs:
        if not value:
            raise BadRequest(f"Empty value for {name!r}", rofecare_code="rofecare-2004")
    plan = parser.parse((resource_type,), pairs, strict=True).plan
    if not plan.where:
        raise BadRequest(
            "A conditional interaction needs search criteria", rofecare_code="rofecare-2002"
        )
    return replace(plan, count=MATCHES_NEEDED, total="none", includes=(), sort=(), cursor=None)
