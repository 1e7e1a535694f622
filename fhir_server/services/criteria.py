"""Criteria of conditional create, update and delete (https://hl7.org/fhir/R4/http.html#ccreate).

Until the general search engine lands, conditions may use ``_id`` and ``identifier`` (the
parameters that identify a resource); anything else is refused with 400 rather than ignored,
because ignoring a condition would widen the match and touch the wrong resource.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest
from fhir_server.model.ids import is_valid_id
from fhir_server.search.tokens import split_escaped
from fhir_server.search.values import TokenEntry
from fhir_server.storage.base import IdentityQuery

SUPPORTED = ("_id", "identifier")


def parse_criteria(resource_type: str, query: str) -> IdentityQuery:
    """``identifier=http://mrn|123&_id=a,b`` -> an IdentityQuery; 400 for anything else."""
    try:
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True, strict_parsing=True)
    except ValueError as error:
        raise BadRequest(f"Malformed condition {query!r}", rofecare_code="rofecare-2001") from error
    if not pairs:
        raise BadRequest(
            "A conditional interaction needs search criteria", rofecare_code="rofecare-2002"
        )
    ids: set[str] | None = None
    tokens: list[tuple[TokenEntry, ...]] = []
    for name, value in pairs:
        if name not in SUPPORTED:
            raise BadRequest(
                f"Unsupported parameter {name!r} in a condition "
                f"(supported: {', '.join(SUPPORTED)})",
                rofecare_code="rofecare-2003",
            )
        if not value:
            raise BadRequest(f"Empty value for {name!r}", rofecare_code="rofecare-2004")
        alternatives = split_escaped(value, ",")
        if name == "_id":
            if not all(is_valid_id(item) for item in alternatives):
                raise BadRequest(f"Invalid id in _id={value!r}", rofecare_code="rofecare-2005")
            ids = set(alternatives) if ids is None else ids & set(alternatives)
        else:
            tokens.append(tuple(_identifier_token(item) for item in alternatives))
    return IdentityQuery(
        resource_type=resource_type,
        ids=tuple(sorted(ids)) if ids is not None else None,
        tokens=tuple(tokens),
    )


def _identifier_token(text: str) -> TokenEntry:
    parts = split_escaped(text, "|")
    if len(parts) == 1:
        return TokenEntry("identifier", None, parts[0])
    if len(parts) == 2 and parts[1]:
        return TokenEntry("identifier", parts[0], parts[1])
    raise BadRequest(
        f"Invalid identifier value {text!r}: expected [system|]value", rofecare_code="rofecare-2006"
    )
