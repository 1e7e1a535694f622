"""The server's parts below the HTTP layer, composed from ``Settings``: what ``rofecare
serve`` puts behind FastAPI, and what the command-line tools and the load workers use
without it.

Why apart from app.py: a process that only writes through the core (a ``rofecare load
--jobs`` worker) does not import FastAPI, the API routes or the token machinery: ~0.6 s
less to start each worker (``python -X importtime``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from fhir_server.config import Settings
from fhir_server.definitions import Definitions, load_definitions
from fhir_server.definitions.registry import profile_resources
from fhir_server.definitions.terminology import Terminology
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.audit_trail import AuditTrail
from fhir_server.services.bundles import BundleService
from fhir_server.services.resources import ResourceService
from fhir_server.services.rules import RuleRegistry
from fhir_server.services.search import SearchService
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.base import ResourceStore
from fhir_server.storage.sqlite import SqliteStore
from fhir_server.validation.profile_registry import ProfileRegistry
from fhir_server.validation.profiles import ProfileValidation
from fhir_server.validation.structure import StructureValidator

RULE_PLUGINS = ("profiles",)
"""Packages whose ``register_rules(registry)`` adds the hospital's write rules."""
TERMINOLOGY_PLUGIN = "terminology"
"""The package whose ``provider()`` answers for code systems and value sets."""


def load_terminology() -> Terminology | None:
    module = importlib.import_module(TERMINOLOGY_PLUGIN)
    factory = getattr(module, "provider", None)
    if factory is None:
        return None
    provider: Terminology = factory()
    return provider


def build_store(settings: Settings) -> ResourceStore:
    if settings.store == "sqlite" or settings.store.startswith("sqlite:///"):
        return SqliteStore(
            settings.sqlite_path(),
            synchronous=settings.sqlite_synchronous,
            search_timeout=settings.search_timeout_seconds,
        )
    if settings.uses_mongodb():
        from fhir_server.storage.mongo import MongoStore  # pymongo: ~0.1 s to import

        return MongoStore.connect(settings.store, search_timeout=settings.search_timeout_seconds)
    raise ValueError(
        f"Unsupported store {settings.store_description()!r} "
        "(supported: sqlite, sqlite:///path, mongodb://..., mongodb+srv://...)"
    )


@dataclass(frozen=True)
class Core:
    """Everything below the HTTP layer, shared by the server and the command-line tools."""

    settings: Settings
    definitions: Definitions
    validator: StructureValidator
    store: ResourceStore
    search_index: SearchIndex
    service: ResourceService
    search: SearchService
    bundles: BundleService
    audit: AuditTrail
    conformance: list[dict[str, Any]]  # the packaged profiles, code systems and value sets
    terminology: Terminology | None

    def warm_up(self) -> None:
        """Build now, in a thread, what the first write would otherwise build on the event
        loop: the compiled R4 schema (~0.1 s) and, when profiles are checked, the code
        systems every write's bindings ask (the R4 core value sets, ICD-10: a quarter of a
        second that held the first request, and every request behind it)."""
        self.validator.warm_up()
        if self.terminology is not None and self.settings.profile_validation != "off":
            self.terminology.validate_code(
                "http://hl7.org/fhir/ValueSet/administrative-gender", None, "male"
            )
            self.terminology.validate_in_system("http://hl7.org/fhir/sid/icd-10", "A00.0")


def build_core(
    settings: Settings, store: ResourceStore | None = None, *, index_later: bool = True
) -> Core:
    """The server's parts; ``store`` replaces the one ``settings`` name (tests use it to run
    the API over the MongoDB store on a stand-in server). ``index_later``: writes leave
    their index entries to the store (``WriteRecord.index_later``); ``rofecare load`` has
    its processes compute them, in parallel, rather than leave them all to the one that
    applies the index log (it then went on indexing for seconds after the last Bundle)."""
    definitions = load_definitions()
    validator = StructureValidator(definitions.resource_types, settings.max_json_depth)
    store = store or build_store(settings)
    terminology = load_terminology()
    search_index = SearchIndex(
        load_search_parameters(),
        definitions.is_resource_type,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        enabled=settings.search_indexing,
        total_limit=settings.search_total_limit,
        terminology=terminology,
    )
    audit = AuditTrail(store, search_index)
    conformance = [
        *profile_resources("StructureDefinition"),
        *profile_resources("CodeSystem"),
        *profile_resources("ValueSet"),
    ]
    profiles = ProfileValidation(
        ProfileRegistry(
            [item for item in conformance if item["resourceType"] == "StructureDefinition"],
            terminology,
        ),
        settings.profile_validation,
    )
    rules = RuleRegistry()
    rules.load(RULE_PLUGINS)
    service = ResourceService(
        store,
        definitions,
        validator,
        search_index,
        allow_client_ids=settings.allow_client_ids,
        max_resource_bytes=settings.max_body_bytes,
        audit=audit,
        profiles=profiles,
        rules=rules,
        index_later=index_later,
    )
    search = SearchService(store, service, search_index, definitions)
    bundles = BundleService(service, search, max_entries=settings.max_bundle_entries)
    return Core(
        settings,
        definitions,
        validator,
        store,
        search_index,
        service,
        search,
        bundles,
        audit,
        conformance,
        terminology,
    )
