"""Wiring of the Identity context: the private store, users, keys, the OAuth server.

Kept apart from the composition root because the command-line tools (``rofecare user``,
``rofecare client``, ``rofecare keys``) need the same parts without a web server.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.auth.context import client_address
from fhir_server.auth.identity import IdentityStore
from fhir_server.auth.key_manager import KeyManager
from fhir_server.auth.mongo_identity import MongoIdentityStore
from fhir_server.auth.oauth import AuthorizationServer, LoginEvent, TokenSettings
from fhir_server.auth.passwords import PasswordHasher, PasswordPolicy
from fhir_server.auth.sqlite_identity import SqliteIdentityStore
from fhir_server.auth.users import LockoutPolicy, Users
from fhir_server.config import Settings
from fhir_server.events.audit import login_event
from fhir_server.model.instant import now_utc, to_instant
from fhir_server.services.audit_trail import AuditTrail

DAY = 24 * 3600


@dataclass(frozen=True)
class Identity:
    store: IdentityStore
    users: Users
    keys: KeyManager
    authorization_server: AuthorizationServer


def build_identity_store(settings: Settings) -> IdentityStore:
    """Where the FHIR data lives, the identity data lives: a SQLite file beside the FHIR
    file, or private collections of the MongoDB database that workers on several hosts
    share (they must all see the same users, tokens and signing keys)."""
    if settings.uses_mongodb():
        return MongoIdentityStore.connect(settings.store)
    return SqliteIdentityStore(settings.identity_path())


def build_identity(
    settings: Settings,
    audit: AuditTrail | None,
    store: IdentityStore | None = None,
    hasher: PasswordHasher | None = None,
) -> Identity:
    store = store or build_identity_store(settings)
    users = Users(
        store,
        hasher
        or PasswordHasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost_kib=settings.password_hash_memory_kib,
        ),
        PasswordPolicy(
            min_length=settings.password_min_length, min_classes=settings.password_min_classes
        ),
        LockoutPolicy(settings.lockout_threshold, settings.lockout_seconds),
    )
    keys = KeyManager(
        store,
        settings.signing_algorithm,
        settings.signing_key_days * DAY,
        settings.access_token_lifetime_seconds,
    )

    async def audit_login(event: LoginEvent) -> None:
        if audit is None:
            return
        success = event.outcome == "success"
        await audit.event(
            login_event(
                username=event.username,
                client_id=event.client_id,
                fhir_user=event.user.fhir_user if event.user else None,
                recorded=to_instant(now_utc()),
                outcome="0" if success else "4",
                description="login succeeded" if success else f"login refused: {event.outcome}",
                source_ip=client_address(),
            )
        )

    server = AuthorizationServer(
        users,
        store,
        keys,
        TokenSettings(
            access_lifetime=settings.access_token_lifetime_seconds,
            refresh_lifetime=settings.refresh_token_lifetime_seconds,
            password_grant=settings.password_grant_enabled,
        ),
        audit_login,
    )
    return Identity(store, users, keys, server)
