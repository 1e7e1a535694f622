"""The identity store contract: one table of behaviours, run against every identity store.

``sqlite`` is ``SqliteIdentityStore`` on a file under tmp_path; ``mongodb-standin`` is
``MongoIdentityStore`` over the in-process stand-in (tests/contract/mongo_standin.py);
``mongodb`` is the same store over the server of ``ROFECARE_TEST_MONGODB_URI``, listed only
when it is set, with a database of its own per test, dropped afterwards.

The concurrency cases start ten calls at once. The stand-in runs each driver call to the
end at once (mongomock is synchronous), so it is reached here through ``Interleaving``,
which hands the event loop to the other calls before and after each driver call: there the
cases prove that no method reads, then writes in a second call that another worker could
slip between. That the server applies each single call atomically under real contention
is shown only against a real server.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from fhir_server.auth.identity import (
    AuthorizationCode,
    Client,
    IdentityStore,
    RefreshToken,
    User,
)
from fhir_server.auth.keys import SigningKey
from fhir_server.auth.mongo_identity import MongoIdentityStore
from fhir_server.auth.sqlite_identity import SqliteIdentityStore
from fhir_server.config import Settings
from fhir_server.errors import StoreUnavailable
from fhir_server.services.identity import build_identity_store
from tests.contract.mongo_standin import StandInClient, StandInUnavailable

MONGODB_URI = os.environ.get("ROFECARE_TEST_MONGODB_URI")
BACKENDS = ["sqlite", "mongodb-standin", *(["mongodb"] if MONGODB_URI else [])]
NOW = 1_700_000_000

Case = Callable[[IdentityStore], Awaitable[None]]
CASES: list[Case] = []


def case(behaviour: Case) -> Case:
    CASES.append(behaviour)
    return behaviour


class Interleaving:
    """A stand-in client whose collections let other tasks run around every driver call."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getitem__(self, name: str) -> Interleaving:
        return Interleaving(self._client[name])

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **options: Any) -> Any:
            await asyncio.sleep(0)
            result = await attribute(*args, **options)
            await asyncio.sleep(0)
            return result

        return call


@pytest.fixture(params=BACKENDS)
async def identity_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[IdentityStore]:
    store: IdentityStore
    real: AsyncMongoClient[dict[str, object]] | None = None
    database = "rofecare_identity_test_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    if request.param == "sqlite":
        store = SqliteIdentityStore(tmp_path / "identity.sqlite3")
    elif request.param == "mongodb-standin":
        standin = Interleaving(StandInClient())
        store = MongoIdentityStore(standin, "rofecare", unavailable=(StandInUnavailable,))
    else:
        assert MONGODB_URI is not None
        real = AsyncMongoClient(MONGODB_URI)
        store = MongoIdentityStore(real, database)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        if real is not None:
            await real.drop_database(database)
            await real.close()


@pytest.mark.parametrize("behaviour", CASES, ids=lambda behaviour: behaviour.__name__)
async def test_identity_store(identity_store: IdentityStore, behaviour: Case) -> None:
    await behaviour(identity_store)


# -- fixtures --------------------------------------------------------------------------------


def user(user_id: str, username: str, **changes: object) -> User:
    fields: dict[str, object] = {
        "password_hash": f"$argon2id$hash-of-{user_id}",
        "fhir_user": f"Practitioner/{user_id}",
        "roles": ("clinician",),
        "created_at": NOW,
    }
    fields.update(changes)
    return User(id=user_id, username=username, **fields)  # type: ignore[arg-type]


def client(client_id: str, **changes: object) -> Client:
    fields: dict[str, object] = {
        "name": f"App {client_id}",
        "kind": "public",
        "grant_types": ("authorization_code", "refresh_token"),
        "scope": "launch/patient patient/*.rs openid fhirUser",
        "redirect_uris": ("https://app.example.org/callback", "http://127.0.0.1:8765/cb"),
        "created_at": NOW,
    }
    fields.update(changes)
    return Client(client_id=client_id, **fields)  # type: ignore[arg-type]


def token(digest: str, family: str = "f1", **changes: object) -> RefreshToken:
    fields: dict[str, object] = {
        "client_id": "app",
        "user_id": "u1",
        "scope": "patient/*.rs offline_access",
        "issued_at": NOW,
        "expires_at": NOW + 3600,
        "patient": "Patient/p1",
    }
    fields.update(changes)
    return RefreshToken(digest=digest, family=family, **fields)  # type: ignore[arg-type]


def code(digest: str) -> AuthorizationCode:
    return AuthorizationCode(
        digest=digest,
        client_id="app",
        user_id="u1",
        redirect_uri="https://app.example.org/callback",
        scope="launch/patient patient/*.rs openid",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        expires_at=NOW + 60,
        patient="Patient/p1",
        nonce="n-0S6_WzA2Mj",
        auth_time=NOW - 5,
    )


def kids(keys: list[SigningKey]) -> list[str]:
    return [key.kid for key in keys]


# -- users -----------------------------------------------------------------------------------


@case
async def user_found_by_name_case_insensitively(store: IdentityStore) -> None:
    alice = user("u1", "Alice", roles=("admin", "clinician"), must_change_password=True)
    await store.add_user(alice)
    assert await store.user_by_name("Alice") == alice
    assert await store.user_by_name("alice") == alice
    assert await store.user_by_name("ALICE") == alice
    assert await store.user_by_id("u1") == alice
    assert await store.user_by_name("bob") is None
    assert await store.user_by_id("u2") is None


@case
async def username_taken_in_another_case_is_refused(store: IdentityStore) -> None:
    await store.add_user(user("u1", "bob"))
    with pytest.raises(ValueError, match="The username 'BoB' is taken"):
        await store.add_user(user("u2", "BoB"))
    assert await store.count_users() == 1
    assert await store.user_by_id("u2") is None


@case
async def usernames_fold_ascii_letters_only(store: IdentityStore) -> None:
    """SQLite's NOCASE folds A-Z only, and the MongoDB store folds the same way."""
    await store.add_user(user("u1", "Ünal"))
    await store.add_user(user("u2", "ünal"))
    found = await store.user_by_name("ünal")
    assert found is not None and found.id == "u2"


@case
async def roles_are_replaced(store: IdentityStore) -> None:
    await store.add_user(user("u1", "alice", roles=("clinician",)))
    await store.set_roles("u1", ("nurse", "admin"))
    found = await store.user_by_id("u1")
    assert found is not None and found.roles == ("admin", "nurse")
    await store.set_roles("u1", ())
    found = await store.user_by_id("u1")
    assert found is not None and found.roles == ()


@case
async def users_are_listed_by_name_and_counted(store: IdentityStore) -> None:
    assert await store.users() == []
    assert await store.count_users() == 0
    for user_id, name in (("u1", "carol"), ("u2", "Alice"), ("u3", "bob")):
        await store.add_user(user(user_id, name))
    assert [found.username for found in await store.users()] == ["Alice", "bob", "carol"]
    assert await store.count_users() == 3


@case
async def set_password_clears_failures_and_lock(store: IdentityStore) -> None:
    await store.add_user(user("u1", "alice", failed_attempts=3, locked_until=NOW + 900))
    await store.set_password("u1", "$argon2id$new", must_change=True)
    found = await store.user_by_id("u1")
    assert found is not None
    assert (found.password_hash, found.must_change_password) == ("$argon2id$new", True)
    assert (found.failed_attempts, found.locked_until) == (0, 0)


@case
async def record_failure_counts_and_locks_at_threshold(store: IdentityStore) -> None:
    await store.add_user(user("u1", "alice"))
    until = NOW + 900
    first = await store.record_failure("u1", 3, until)
    second = await store.record_failure("u1", 3, until)
    assert (first.failed_attempts, first.locked_until) == (1, 0)
    assert (second.failed_attempts, second.locked_until) == (2, 0)
    third = await store.record_failure("u1", 3, until)
    assert (third.failed_attempts, third.locked_until) == (0, until)  # locked, counter reset
    fourth = await store.record_failure("u1", 3, until + 5)
    assert (fourth.failed_attempts, fourth.locked_until) == (1, until)
    assert await store.user_by_id("u1") == fourth


@case
async def record_success_clears_failures_and_lock(store: IdentityStore) -> None:
    await store.add_user(user("u1", "alice", failed_attempts=2, locked_until=NOW + 60))
    await store.record_success("u1")
    found = await store.user_by_id("u1")
    assert found is not None and (found.failed_attempts, found.locked_until) == (0, 0)


@case
async def set_active_disables_and_enables(store: IdentityStore) -> None:
    await store.add_user(user("u1", "alice"))
    await store.set_active("u1", False)
    found = await store.user_by_id("u1")
    assert found is not None and found.active is False
    await store.set_active("u1", True)
    found = await store.user_by_id("u1")
    assert found is not None and found.active is True


# -- clients ---------------------------------------------------------------------------------


@case
async def clients_round_trip_and_are_listed_by_id(store: IdentityStore) -> None:
    jwks: dict[str, object] = {
        "keys": [{"kty": "EC", "crv": "P-256", "x": "f83O", "y": "x_FE", "kid": "k1"}],
        "$comment": "member names MongoDB would not take as field names: a.b, $x",
    }
    backend = client(
        "backend",
        kind="confidential",
        grant_types=("client_credentials",),
        scope="system/*.rs",
        redirect_uris=(),
        jwks=jwks,
    )
    web = client("web", kind="confidential", secret_hash="ab" * 32, active=False)
    app = client("app", jwks={})
    for registered in (web, backend, app):
        await store.add_client(registered)
    assert await store.client("backend") == backend
    assert await store.client("web") == web
    assert await store.client("app") == app
    assert await store.client("unknown") is None
    assert await store.clients() == [app, backend, web]


@case
async def duplicate_client_id_is_refused(store: IdentityStore) -> None:
    await store.add_client(client("app"))
    with pytest.raises(ValueError, match="The client id 'app' is taken"):
        await store.add_client(client("app", name="Another app"))
    assert [found.name for found in await store.clients()] == ["App app"]


# -- refresh tokens and codes ----------------------------------------------------------------


@case
async def refresh_token_is_used_once(store: IdentityStore) -> None:
    issued = token("d1")
    await store.add_refresh_token(issued)
    assert await store.refresh_token("d1") == issued
    assert await store.use_refresh_token("d1") == issued  # as it was: unused
    again = await store.use_refresh_token("d1")
    assert again is not None and again.used is True
    stored = await store.refresh_token("d1")
    assert stored is not None and stored.used is True and stored.revoked is False
    assert await store.use_refresh_token("unknown") is None
    assert await store.refresh_token("unknown") is None


@case
async def revoke_family_revokes_all_of_it(store: IdentityStore) -> None:
    for digest, family in (("a1", "fa"), ("a2", "fa"), ("a3", "fa"), ("b1", "fb")):
        await store.add_refresh_token(token(digest, family, patient=None))
    await store.revoke_family("fa")
    for digest, revoked in (("a1", True), ("a2", True), ("a3", True), ("b1", False)):
        found = await store.refresh_token(digest)
        assert found is not None and found.revoked is revoked
        assert found.used is False and found.patient is None


@case
async def code_is_taken_once(store: IdentityStore) -> None:
    issued = code("c1")
    await store.add_code(issued)
    assert await store.take_code("c1") == issued
    assert await store.take_code("c1") is None
    assert await store.take_code("unknown") is None


# -- client assertion jtis -------------------------------------------------------------------


# Their times are ahead of the wall clock: MongoDB's TTL monitor (and mongomock's imitation
# of it) deletes jtis by the real time, whatever ``now`` the store is given.


@case
async def jti_is_a_replay_the_second_time(store: IdentityStore) -> None:
    now = int(time.time()) + 3600
    assert await store.remember_jti("backend", "j1", now + 300, now) is False
    assert await store.remember_jti("backend", "j1", now + 300, now + 1) is True
    assert await store.remember_jti("other", "j1", now + 300, now + 1) is False
    assert await store.remember_jti("backend", "j2", now + 300, now + 1) is False


@case
async def expired_jtis_are_forgotten(store: IdentityStore) -> None:
    now = int(time.time()) + 3600
    assert await store.remember_jti("backend", "j1", now + 100, now) is False
    assert await store.remember_jti("backend", "j1", now + 100, now + 100) is True  # not yet
    assert await store.remember_jti("backend", "j1", now + 300, now + 101) is False
    assert await store.remember_jti("backend", "j1", now + 300, now + 102) is True


# -- signing keys ----------------------------------------------------------------------------


@case
async def signing_keys_are_compared_and_swapped(store: IdentityStore) -> None:
    first = SigningKey.generate("ES256", NOW)
    second = SigningKey.generate("ES256", NOW + 10)
    third = SigningKey.generate("ES256", NOW + 20)
    assert await store.signing_keys() == []
    assert await store.replace_signing_keys(["stale"], [first]) is False
    assert await store.signing_keys() == []
    assert await store.replace_signing_keys([], [first]) is True
    assert await store.signing_keys() == [first]
    assert await store.replace_signing_keys([], [second]) is False  # stale: first is there
    retired = SigningKey(first.kid, "ES256", first.private_pem, first.created_at, NOW + 10)
    assert await store.replace_signing_keys([first.kid], [second, retired]) is True
    assert await store.signing_keys() == [retired, second]  # by creation time
    assert await store.replace_signing_keys([first.kid], [third]) is False
    assert await store.replace_signing_keys([second.kid, "other"], [third]) is False
    assert await store.signing_keys() == [retired, second]
    assert await store.replace_signing_keys([second.kid, first.kid], [third]) is True
    assert kids(await store.signing_keys()) == [third.kid]
    assert await store.replace_signing_keys([third.kid], []) is True
    assert await store.signing_keys() == []
    assert await store.replace_signing_keys([], [first]) is True
    assert await store.signing_keys() == [first]


# -- concurrency -----------------------------------------------------------------------------


@case
async def concurrent_failures_all_count(store: IdentityStore) -> None:
    await store.add_user(user("u1", "alice"))
    until = NOW + 900
    results = await asyncio.gather(*(store.record_failure("u1", 4, until) for _ in range(10)))
    # One after another: 1 2 3 lock(0) 1 2 3 lock(0) 1 2.
    assert sorted(found.failed_attempts for found in results) == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert sum(found.locked_until == 0 for found in results) == 3
    final = await store.user_by_id("u1")
    assert final is not None and (final.failed_attempts, final.locked_until) == (2, until)


@case
async def concurrent_refresh_exactly_one_unused(store: IdentityStore) -> None:
    await store.add_refresh_token(token("d1"))
    results = await asyncio.gather(*(store.use_refresh_token("d1") for _ in range(10)))
    assert all(found is not None for found in results)
    assert sum(found is not None and not found.used for found in results) == 1


@case
async def concurrent_code_exchange_exactly_one_gets_it(store: IdentityStore) -> None:
    await store.add_code(code("c1"))
    results = await asyncio.gather(*(store.take_code("c1") for _ in range(10)))
    assert sum(found is not None for found in results) == 1


@case
async def concurrent_assertions_exactly_one_accepted(store: IdentityStore) -> None:
    now = int(time.time()) + 3600
    results = await asyncio.gather(
        *(store.remember_jti("backend", "j1", now + 300, now) for _ in range(10))
    )
    assert results.count(False) == 1


@case
async def concurrent_rotations_make_one_key(store: IdentityStore) -> None:
    candidates = [SigningKey.generate("ES256", NOW) for _ in range(5)]
    results = await asyncio.gather(*(store.replace_signing_keys([], [k]) for k in candidates))
    assert results.count(True) == 1
    assert await store.signing_keys() == [candidates[results.index(True)]]


# -- the MongoDB store only ------------------------------------------------------------------


async def test_unreachable_database_is_a_503() -> None:
    standin = StandInClient()
    store = MongoIdentityStore(standin, "rofecare", unavailable=(StandInUnavailable,))
    await store.open()
    standin.down = True
    with pytest.raises(StoreUnavailable) as raised:
        await store.user_by_name("alice")
    assert raised.value.headers == {"Retry-After": "5"}
    with pytest.raises(StoreUnavailable):
        await store.users()


async def test_mongodb_settings_build_the_mongodb_identity_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, store="mongodb://127.0.0.1:1/hospital?replicaSet=rs0")
    store = build_identity_store(settings)
    assert isinstance(store, MongoIdentityStore)
    await store.close()  # its own client, created lazily: nothing was contacted
    assert isinstance(build_identity_store(Settings(data_dir=tmp_path)), SqliteIdentityStore)
