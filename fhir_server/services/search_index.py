"""The search parameters in force, and what writes index with them.

One object holds the registry, the indexer and the parser built from it, so a
SearchParameter created at run time swaps all three at once: writes index it from then on,
searches accept it, and ``rofecare reindex`` fills it in for resources written before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.definitions.registry import load_patient_compartment
from fhir_server.definitions.terminology import Terminology
from fhir_server.errors import InvalidResource
from fhir_server.search.indexer import Indexer, full_text
from fhir_server.search.parser import SearchParser
from fhir_server.search.paths import split_union
from fhir_server.search.registry import SearchParameterRegistry, build_registry
from fhir_server.search.values import FullText, IndexEntry

IDENTIFIER = "identifier"  # the parameter every identifier claim is taken from (claims.py)

MAX_STORED_PARAMETERS = 10_000


class SearchIndex:
    def __init__(
        self,
        base: SearchParameterRegistry,
        is_type: Callable[[str], bool],
        *,
        default_count: int,
        max_count: int,
        enabled: bool = True,
        total_limit: int = 1000,
        terminology: Terminology | None = None,
    ) -> None:
        self._base = base
        self._terminology = terminology
        self._is_type = is_type
        self._default_count = default_count
        self._max_count = max_count
        self._total_limit = total_limit
        self.enabled = enabled
        self._write_parameters: dict[str, frozenset[str]] = {}  # type -> write_entries'
        self._install(base)

    def _install(self, registry: SearchParameterRegistry) -> None:
        self.registry = registry
        self.indexer = Indexer(registry)
        self.parser = SearchParser(
            registry,
            self._is_type,
            default_count=self._default_count,
            max_count=self._max_count,
            total_limit=self._total_limit,
            terminology=self._terminology,
        )

    def entries(self, resource: dict[str, Any]) -> tuple[tuple[IndexEntry, ...], FullText | None]:
        if not self.enabled:
            return (), None
        return tuple(self.indexer.entries(resource)), full_text(resource)

    def write_entries(self, resource: dict[str, Any]) -> tuple[IndexEntry, ...]:
        """The entries the write of ``resource`` reads itself, before it is indexed: its
        identifiers (the keys it claims, storage/sqlite/claims.py) and the references of
        its Patient compartment parameters (the patients its AuditEvent names). The rest
        is computed when the store indexes it (``WriteRecord.index_later``)."""
        if not self.enabled:
            return ()
        resource_type = resource["resourceType"]
        wanted = self._write_parameters.get(resource_type)
        if wanted is None:
            links = load_patient_compartment().get(resource_type, ())
            wanted = self._write_parameters[resource_type] = frozenset({IDENTIFIER, *links})
        return tuple(self.indexer.entries(resource, only=wanted))

    def use_stored(self, definitions: list[dict[str, Any]]) -> None:
        """Rebuild with the active SearchParameter resources stored in this server."""
        usable = [definition for definition in definitions if _usable(definition)]
        registry = self._base.extended(usable[:MAX_STORED_PARAMETERS])
        if registry is not self.registry:
            self._install(registry)

    @staticmethod
    def check_definition(resource: dict[str, Any]) -> None:
        """Refuse a SearchParameter whose expression this server cannot evaluate: storing it
        would make every later write fail to index."""
        if not _usable(resource):
            return
        problem = _expression_problem(resource["expression"], resource["base"])
        if problem is None:
            try:
                build_registry([resource])
            except Exception as error:  # the FHIRPath engine raises plain Exceptions
                problem = str(error)
        if problem is not None:
            raise InvalidResource(
                f"SearchParameter.expression cannot be evaluated: {problem}",
                expression="SearchParameter.expression",
                rofecare_code="rofecare-2201",
            )


def _usable(definition: dict[str, Any]) -> bool:
    return (
        definition.get("status") in ("active", "draft")
        and isinstance(definition.get("expression"), str)
        and isinstance(definition.get("code"), str)
        and isinstance(definition.get("base"), list)
    )


def _expression_problem(expression: str, bases: list[Any]) -> str | None:
    """Faults the FHIRPath engine would not report (its parser recovers from syntax errors
    and then silently selects nothing): unbalanced brackets or quotes, and union members
    that do not start at one of the parameter's base types."""
    depth, quoted = 0, False
    for char in expression:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
            if depth < 0:
                return "a closing bracket has no opening one"
    if depth or quoted:
        return "unbalanced brackets or quotes"
    roots = (*(str(base) for base in bases), "Resource", "DomainResource")
    for member in split_union(expression):
        start = member.lstrip("(").split(".")[0].split(" ")[0]
        if start not in roots:
            return f"{member[:60]!r} does not start at a base type ({', '.join(roots)})"
        if member.rstrip().endswith((".", "(")):
            return f"{member[:60]!r} is incomplete"
    return None
