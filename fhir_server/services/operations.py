"""The operation registry: every ``$operation`` is declared by its OperationDefinition.

https://hl7.org/fhir/R4/operations.html. Operations live outside the core (the top-level
``operations`` package and other plug-ins) and reach it only through this module and the
services it hands them, so the core never imports them: ``load`` imports each plug-in
package by name at start-up and calls its ``register(registry)``. From the registered
definitions the API finds the operation of a URL, the shared parser
(``operation_parameters.py``) checks the arguments, and the CapabilityStatement lists each
type's operations, so declaring an operation is the only way to add one.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_server.errors import Issue, NotFound
from fhir_server.services.operation_parameters import Arguments, ParameterSpec, parameter_specs
from fhir_server.services.resources import ResourceService
from fhir_server.services.search import SearchService
from fhir_server.storage.base import StoredVersion

Level = Literal["system", "type", "instance"]
__all__ = [
    "Level",
    "Operation",
    "OperationCall",
    "OperationRegistry",
    "OperationServices",
    "PageSize",
    "ResourceAnswer",
    "Searchset",
    "StoredVersion",
]


@dataclass(frozen=True)
class OperationServices:
    """What an operation may use of the core: the service layer, nothing below it."""

    resources: ResourceService
    search: SearchService


@dataclass(frozen=True)
class PageSize:
    """The server's paging limits (``ROFECARE_DEFAULT_PAGE_SIZE`` / ``MAX_PAGE_SIZE``)."""

    default: int
    maximum: int

    def of(self, requested: int | None) -> int:
        """``_count`` as search treats it: the default when absent, capped at the maximum."""
        return self.default if requested is None else min(requested, self.maximum)


@dataclass(frozen=True)
class OperationCall:
    """One invocation: where (type, id), the checked arguments, the paging cursor."""

    resource_type: str
    resource_id: str | None
    arguments: Arguments
    cursor: str | None
    page_size: PageSize


@dataclass(frozen=True)
class Searchset:
    """A page of a searchset Bundle answer: matches, then included resources; the API adds
    ``self``/``next`` links carrying ``link_parameters`` and the cursors."""

    matches: list[StoredVersion]
    included: list[StoredVersion]
    total: int | None
    next_cursor: str | None
    link_parameters: list[tuple[str, str]]
    issues: list[Issue] = field(default_factory=list)


@dataclass(frozen=True)
class ResourceAnswer:
    """An answer that is one resource, returned as it is (operations.html#response): the
    ``Parameters`` of ``$lookup`` or ``$validate-code``, the ``ValueSet`` of ``$expand``."""

    resource: dict[str, Any]


OperationResult = Searchset | ResourceAnswer
Handler = Callable[[OperationServices, OperationCall], Awaitable[OperationResult]]


@dataclass(frozen=True)
class Operation:
    """An OperationDefinition (as JSON data) and the code that runs it at ``levels``, which
    may be fewer than the definition allows; the others answer 404."""

    definition: Mapping[str, Any]
    handler: Handler
    levels: frozenset[Level] = frozenset({"instance"})
    parameters: tuple[ParameterSpec, ...] = field(init=False)

    def __post_init__(self) -> None:
        problems = [key for key in ("url", "code", "resource") if not self.definition.get(key)]
        if self.definition.get("resourceType") != "OperationDefinition" or problems:
            raise ValueError(f"Not a usable OperationDefinition (missing {problems})")
        declared = {level for level in ("system", "type", "instance") if self.definition[level]}
        if not self.levels <= declared:
            raise ValueError(f"{self.url} is not declared at {sorted(self.levels - declared)}")
        object.__setattr__(self, "parameters", parameter_specs(self.definition))

    @property
    def code(self) -> str:
        code: str = self.definition["code"]
        return code

    @property
    def url(self) -> str:
        url: str = self.definition["url"]
        return url

    @property
    def resource_types(self) -> tuple[str, ...]:
        return tuple(self.definition["resource"])


class OperationRegistry:
    """Operations by (resource type, code); filled at start-up, read-only afterwards."""

    def __init__(self) -> None:
        self._operations: dict[tuple[str, str], Operation] = {}

    def register(self, operation: Operation) -> None:
        for resource_type in operation.resource_types:
            key = (resource_type, operation.code)
            if key in self._operations:
                raise ValueError(f"${operation.code} is registered twice for {resource_type}")
            self._operations[key] = operation

    def load(self, packages: Sequence[str]) -> None:
        """Import each plug-in package and let it register its operations."""
        for name in packages:
            register: Callable[[OperationRegistry], None] = importlib.import_module(name).register
            register(self)

    def find(self, resource_type: str, code: str, level: Level) -> Operation:
        """The operation for ``[type]/[id]/$code`` (or the type level); 404 otherwise."""
        operation = self._operations.get((resource_type, code))
        if operation is None:
            raise NotFound(
                f"${code[:60]} is not an operation on {resource_type[:60]}",
                rofecare_code="rofecare-2506",
            )
        if level not in operation.levels:
            where = ", ".join(sorted(operation.levels))
            raise NotFound(
                f"${code} on {resource_type} is implemented at the {where} level only",
                rofecare_code="rofecare-2506",
            )
        return operation

    def for_type(self, resource_type: str) -> list[Operation]:
        """The type's operations, by code (for the CapabilityStatement)."""
        found = [op for (kind, _), op in self._operations.items() if kind == resource_type]
        return sorted(found, key=lambda operation: operation.code)
