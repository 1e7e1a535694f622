"""Composition root: ``build_app(settings)`` picks the store and wires the service and API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Response

from fhir_server import __version__
from fhir_server.api import errors
from fhir_server.api.authentication import Authenticator
from fhir_server.api.capability import capability_statement
from fhir_server.api.oauth import oauth_routes
from fhir_server.api.routes import fhir_routes
from fhir_server.auth.identity import IdentityStore
from fhir_server.config import Settings
from fhir_server.core import build_core
from fhir_server.long_lived import freeze_start_up
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.services.conformance import publish_conformance
from fhir_server.services.identity import Identity, build_identity
from fhir_server.services.operations import OperationRegistry
from fhir_server.services.resources import ResourceService
from fhir_server.storage.base import ResourceStore

OPERATION_PLUGINS = ("operations",)
"""Packages whose ``register(registry)`` adds $operations (imported by name, never statically)."""


def check_security(settings: Settings) -> None:
    """Secure by default: authentication may be off only where nobody else can connect."""
    if not settings.auth_enabled and not settings.binds_loopback():
        raise ValueError(
            f"Authentication is off (ROFECARE_AUTH_ENABLED=false) but the server would listen "
            f"on {settings.host}: turn authentication on, or listen on 127.0.0.1 only"
        )


def build_app(
    settings: Settings | None = None,
    store: ResourceStore | None = None,
    identity_store: IdentityStore | None = None,
) -> FastAPI:
    settings = settings or Settings()
    check_security(settings)
    core = build_core(settings, store)
    definitions, store = core.definitions, core.store
    service, search, search_index = core.service, core.search, core.search_index
    identity: Identity = build_identity(settings, core.audit, identity_store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        await identity.store.open()
        await service.reload_search_parameters()
        if service.profiles is not None and service.profiles.mode != "off":
            await publish_conformance(service, core.conformance)
        await asyncio.to_thread(core.warm_up)
        await identity.keys.refresh()
        await core.audit.start()
        freeze_start_up()  # what was built so far lives as long as the process
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await core.audit.stop()
            await identity.store.close()
            await store.close()

    app = FastAPI(
        title="Rofecare FHIR server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.definitions = definitions
    app.state.service = service
    app.state.search = search
    app.state.bundles = core.bundles
    app.state.store = store
    app.state.audit = core.audit
    app.state.identity = identity
    app.state.keys = identity.keys
    app.state.authorization_server = identity.authorization_server
    app.state.ready = False
    operations = OperationRegistry()
    operations.load(OPERATION_PLUGINS)
    app.state.operations = operations
    app.state.capability = orjson.dumps(
        capability_statement(
            settings,
            definitions,
            search_index.registry,
            to_instant(now_utc()),
            operations,
            _supported_profiles(service),
        )
    )
    errors.install(app)
    authenticator = Authenticator(identity.keys, core.audit) if settings.auth_enabled else None
    app.state.authenticator = authenticator
    app.router.routes.extend(oauth_routes(settings.base_path))
    app.router.routes.extend(
        fhir_routes(settings.base_path, authenticator.protect if authenticator else None)
    )

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/ready", include_in_schema=False)
    async def ready() -> Response:
        if app.state.ready:
            return Response(b'{"status":"ready"}', media_type="application/json")
        return Response(b'{"status":"starting"}', 503, media_type="application/json")

    return app


def _supported_profiles(service: ResourceService) -> dict[str, list[str]]:
    """Resource type -> the packaged profiles in force for it (none with validation off)."""
    found: dict[str, list[str]] = {}
    if service.profiles is None or service.profiles.mode == "off":
        return found
    for profile in service.profiles.registry.packaged:
        found.setdefault(profile.type, []).append(profile.url)
    return found


def configure_logging(settings: Settings) -> None:
    """The ``rofecare.*`` loggers at ``--log-level`` on stderr, beside uvicorn's own (which
    configures only its loggers). Records carry ids and codes, never secrets."""
    logger = logging.getLogger("rofecare")
    logger.setLevel(settings.log_level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def create_app() -> FastAPI:
    """Factory for uvicorn workers: each reads its Settings from ROFECARE_* variables."""
    settings = Settings()
    configure_logging(settings)
    return build_app(settings)
