"""The identity store in the MongoDB database the workers share, beside the FHIR data.

With the MongoDB backend the workers run on several hosts, so a local SQLite file cannot
hold the users, the refresh tokens and the signing keys they must all see. The identity
data lives in collections of the FHIR database named ``identity_*``: no FHIR code path
reads them (the FHIR store only knows ``versions``, ``current``, ``counters`` and
``conditions``), and the prefix tells an operator dumping or sharing the clinical data
which collections to leave out (``mongodump --excludeCollectionsWithPrefix=identity_``).

Every method keeps the semantics of ``SqliteIdentityStore``, where each call is one
serialized transaction. Here each call is one single-document atomic operation instead,
which holds on any deployment without multi-document transactions or retry loops:

- ``record_failure`` is one aggregation-pipeline update (count, then lock and reset at the
  threshold), so two workers failing at once both count and the lock cannot be skipped;
- ``use_refresh_token`` is ``find_one_and_update`` returning the document before it, so of
  two workers presenting one token exactly one sees it unused;
- ``take_code`` is ``find_one_and_delete``: a code is handed out once;
- ``remember_jti`` inserts under a unique (client_id, jti) index: the loser of a race gets
  a duplicate-key error, which is the replay;
- the signing keys are one "keyring" document, and ``replace_signing_keys`` updates it
  with a filter on its sorted kid list: the compare and the swap are one document update
  (a version counter would add a second field to keep in step with the kids it stands
  for). A multi-document transaction over one document per key would also work, but needs
  a retry on write conflicts, and the contract suite's stand-in only serializes
  transactions, so it could not show that the swap is atomic; this design it can.

Usernames are unique case-insensitively through ``username_key``, folded the way SQLite's
``NOCASE`` folds (ASCII letters only), so both stores accept and refuse the same names
and sort them in the same order.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson
from bson import ObjectId
from pymongo import AsyncMongoClient, ReturnDocument, errors

from fhir_server.auth.identity import AuthorizationCode, Client, RefreshToken, User
from fhir_server.auth.keys import SigningKey
from fhir_server.errors import StoreUnavailable

T = TypeVar("T")

DEFAULT_DATABASE = "rofecare"
SERVER_SELECTION_MS = 5_000
RETRY_AFTER_SECONDS = "5"
KEYRING_ID = "keyring"
JTI_TTL_GRACE_SECONDS = 300
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def username_key(username: str) -> str:
    """The username as SQLite's NOCASE collation compares it (ASCII letters folded)."""
    return username.translate(_ASCII_LOWER)


class MongoIdentityStore:
    """The identity store over a database of ``client`` (``AsyncMongoClient`` or a stand-in)."""

    def __init__(
        self,
        client: Any,
        database_name: str,
        *,
        owns_client: bool = False,
        unavailable: tuple[type[BaseException], ...] = (errors.ConnectionFailure,),
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._unavailable = unavailable
        db = client[database_name]
        self._users = db["identity_users"]
        self._clients = db["identity_clients"]
        self._tokens = db["identity_refresh_tokens"]
        self._codes = db["identity_codes"]
        self._jtis = db["identity_jtis"]
        self._keys = db["identity_keys"]

    @classmethod
    def connect(
        cls, uri: str, server_selection_ms: int = SERVER_SELECTION_MS
    ) -> MongoIdentityStore:
        """The store over ``uri``'s database ("rofecare" when the URI names none), with a
        client of its own that ``close`` closes; built as ``MongoStore.connect`` builds its."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=server_selection_ms, retryWrites=True, retryReads=True
        )
        # From the URI's path: pymongo's parse_uri would resolve a mongodb+srv name (DNS).
        database = unquote(urlsplit(uri).path.lstrip("/")) or DEFAULT_DATABASE
        return cls(client, database, owns_client=True)

    async def open(self) -> None:
        """Create the indexes; idempotent, since every worker does it at start-up."""
        await self._guard(self._users.create_index([("username_key", 1)], unique=True))
        await self._guard(self._tokens.create_index([("family", 1)]))
        await self._guard(self._jtis.create_index([("client_id", 1), ("jti", 1)], unique=True))
        await self._guard(self._jtis.create_index([("expires_at", 1)]))
        # MongoDB's own clean-up of jtis nobody presents again. remember_jti does not rely on
        # it, and it runs by the database's clock: the grace keeps a jti remembered while a
        # worker whose clock lags the database's could still accept its assertion.
        await self._guard(
            self._jtis.create_index([("expires", 1)], expireAfterSeconds=JTI_TTL_GRACE_SECONDS)
        )

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    async def _guard(self, pending: Awaitable[T]) -> T:
        """An unreachable database answers 503 with Retry-After, as the FHIR store does."""
        try:
            return await pending
        except self._unavailable as error:
            raise StoreUnavailable(
                "The identity database is unreachable or failing over; retry shortly",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ) from error

    async def _all(self, collection: Any, sort_field: str) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            return [document async for document in collection.find({}, sort=[(sort_field, 1)])]

        return await self._guard(run())

    # -- users -------------------------------------------------------------------------------

    async def add_user(self, user: User) -> None:
        try:
            await self._guard(self._users.insert_one(_user_document(user)))
        except errors.DuplicateKeyError:
            raise ValueError(f"The username {user.username!r} is taken") from None

    async def user_by_name(self, username: str) -> User | None:
        document = await self._guard(self._users.find_one({"username_key": username_key(username)}))
        return _user(document) if document else None

    async def user_by_id(self, user_id: str) -> User | None:
        document = await self._guard(self._users.find_one({"_id": user_id}))
        return _user(document) if document else None

    async def users(self) -> list[User]:
        return [_user(document) for document in await self._all(self._users, "username_key")]

    async def count_users(self) -> int:
        count: int = await self._guard(self._users.count_documents({}))
        return count

    async def set_password(self, user_id: str, password_hash: str, *, must_change: bool) -> None:
        changes = {
            "password_hash": password_hash,
            "must_change_password": must_change,
            "failed_attempts": 0,
            "locked_until": 0,
        }
        await self._guard(self._users.update_one({"_id": user_id}, {"$set": changes}))

    async def set_active(self, user_id: str, active: bool) -> None:
        await self._guard(self._users.update_one({"_id": user_id}, {"$set": {"active": active}}))

    async def set_roles(self, user_id: str, roles: tuple[str, ...]) -> None:
        update = {"$set": {"roles": sorted(set(roles))}}
        await self._guard(self._users.update_one({"_id": user_id}, update))

    async def record_failure(self, user_id: str, threshold: int, lock_until: int) -> User:
        # One pipeline update: the second stage sees the first's count, so the increment
        # and the lock cannot be separated by another worker's failure.
        locking = {"$gte": ["$failed_attempts", threshold]}
        pipeline = [
            {"$set": {"failed_attempts": {"$add": ["$failed_attempts", 1]}}},
            {
                "$set": {
                    "locked_until": {"$cond": [locking, lock_until, "$locked_until"]},
                    "failed_attempts": {"$cond": [locking, 0, "$failed_attempts"]},
                }
            },
        ]
        document = await self._guard(
            self._users.find_one_and_update(
                {"_id": user_id}, pipeline, return_document=ReturnDocument.AFTER
            )
        )
        if document is None:
            raise LookupError(f"No user with id {user_id!r}")
        return _user(document)

    async def record_success(self, user_id: str) -> None:
        update = {"$set": {"failed_attempts": 0, "locked_until": 0}}
        await self._guard(self._users.update_one({"_id": user_id}, update))

    # -- clients -----------------------------------------------------------------------------

    async def add_client(self, client: Client) -> None:
        try:
            await self._guard(self._clients.insert_one(_client_document(client)))
        except errors.DuplicateKeyError:
            raise ValueError(f"The client id {client.client_id!r} is taken") from None

    async def client(self, client_id: str) -> Client | None:
        document = await self._guard(self._clients.find_one({"_id": client_id}))
        return _client(document) if document else None

    async def clients(self) -> list[Client]:
        return [_client(document) for document in await self._all(self._clients, "_id")]

    # -- refresh tokens and codes ------------------------------------------------------------

    async def add_refresh_token(self, token: RefreshToken) -> None:
        await self._guard(self._tokens.insert_one(_keyed_document(token)))

    async def refresh_token(self, digest: str) -> RefreshToken | None:
        document = await self._guard(self._tokens.find_one({"_id": digest}))
        return _token(document) if document else None

    async def use_refresh_token(self, digest: str) -> RefreshToken | None:
        document = await self._guard(
            self._tokens.find_one_and_update(
                {"_id": digest}, {"$set": {"used": True}}, return_document=ReturnDocument.BEFORE
            )
        )
        return _token(document) if document else None

    async def revoke_family(self, family: str) -> None:
        await self._guard(self._tokens.update_many({"family": family}, {"$set": {"revoked": True}}))

    async def revoke_user_tokens(self, user_id: str) -> None:
        await self._guard(
            self._tokens.update_many({"user_id": user_id}, {"$set": {"revoked": True}})
        )

    async def add_code(self, code: AuthorizationCode) -> None:
        await self._guard(self._codes.insert_one(_keyed_document(code)))

    async def take_code(self, digest: str) -> AuthorizationCode | None:
        document = await self._guard(self._codes.find_one_and_delete({"_id": digest}))
        return _code(document) if document else None

    async def remember_jti(self, client_id: str, jti: str, expires_at: int, now: int) -> bool:
        await self._guard(self._jtis.delete_many({"expires_at": {"$lt": now}}))
        document = {
            "_id": ObjectId(),
            "client_id": client_id,
            "jti": jti,
            "expires_at": expires_at,
            "expires": datetime.fromtimestamp(expires_at, tz=UTC),  # for the TTL index
        }
        try:
            await self._guard(self._jtis.insert_one(document))
        except errors.DuplicateKeyError:
            return True
        return False

    # -- signing keys ------------------------------------------------------------------------

    async def signing_keys(self) -> list[SigningKey]:
        ring = await self._guard(self._keys.find_one({"_id": KEYRING_ID}))
        keys = [_key(document) for document in ring["keys"]] if ring else []
        return sorted(keys, key=lambda key: key.created_at)

    async def replace_signing_keys(self, expected: list[str], keys: list[SigningKey]) -> bool:
        kids = sorted(key.kid for key in keys)
        if len(set(kids)) != len(kids):
            raise ValueError("Two signing keys share a kid")
        ring = {"kids": kids, "keys": [_key_document(key) for key in keys]}
        swapped = await self._guard(
            self._keys.update_one({"_id": KEYRING_ID, "kids": sorted(expected)}, {"$set": ring})
        )
        if swapped.matched_count == 1:
            return True
        if expected:
            return False
        # No keys expected: the keyring may not exist yet, and creating it is the swap
        # (two workers creating it at once: the second hits the first's _id).
        try:
            await self._guard(self._keys.insert_one({"_id": KEYRING_ID, **ring}))
        except errors.DuplicateKeyError:
            return False
        return True


def _user_document(user: User) -> dict[str, Any]:
    return {
        "_id": user.id,
        "username": user.username,
        "username_key": username_key(user.username),
        "password_hash": user.password_hash,
        "fhir_user": user.fhir_user,
        "roles": sorted(set(user.roles)),
        "active": user.active,
        "failed_attempts": user.failed_attempts,
        "locked_until": user.locked_until,
        "must_change_password": user.must_change_password,
        "created_at": user.created_at,
    }


def _user(document: dict[str, Any]) -> User:
    return User(
        id=document["_id"],
        username=document["username"],
        password_hash=document["password_hash"],
        fhir_user=document["fhir_user"],
        roles=tuple(document["roles"]),
        active=bool(document["active"]),
        failed_attempts=int(document["failed_attempts"]),
        locked_until=int(document["locked_until"]),
        must_change_password=bool(document["must_change_password"]),
        created_at=int(document["created_at"]),
    )


def _client_document(client: Client) -> dict[str, Any]:
    return {
        "_id": client.client_id,
        "name": client.name,
        "kind": client.kind,
        "grant_types": list(client.grant_types),
        "scope": client.scope,
        "redirect_uris": list(client.redirect_uris),
        "secret_hash": client.secret_hash,
        # As JSON text, as SQLite keeps it: a JWKS is the client's JSON, whose member names
        # MongoDB need not accept as field names ("$", "."), and it must come back unchanged.
        "jwks": orjson.dumps(client.jwks).decode() if client.jwks is not None else None,
        "active": client.active,
        "created_at": client.created_at,
    }


def _client(document: dict[str, Any]) -> Client:
    jwks = document["jwks"]
    return Client(
        client_id=document["_id"],
        name=document["name"],
        kind=document["kind"],
        grant_types=tuple(document["grant_types"]),
        scope=document["scope"],
        redirect_uris=tuple(document["redirect_uris"]),
        secret_hash=document["secret_hash"],
        jwks=orjson.loads(jwks) if jwks is not None else None,
        active=bool(document["active"]),
        created_at=int(document["created_at"]),
    )


def _keyed_document(record: RefreshToken | AuthorizationCode) -> dict[str, Any]:
    """A token or code under its digest as ``_id``: flat scalars, stored as they are."""
    document = asdict(record)
    return {"_id": document.pop("digest"), **document}


def _token(document: dict[str, Any]) -> RefreshToken:
    return RefreshToken(digest=document["_id"], **_fields(RefreshToken, document))


def _code(document: dict[str, Any]) -> AuthorizationCode:
    return AuthorizationCode(digest=document["_id"], **_fields(AuthorizationCode, document))


def _fields(
    kind: type[RefreshToken | AuthorizationCode], document: dict[str, Any]
) -> dict[str, Any]:
    return {field.name: document[field.name] for field in fields(kind) if field.name != "digest"}


def _key_document(key: SigningKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "private_pem": key.private_pem,
        "created_at": key.created_at,
        "retired_at": key.retired_at,
    }


def _key(document: dict[str, Any]) -> SigningKey:
    retired_at = document["retired_at"]
    return SigningKey(
        kid=document["kid"],
        algorithm=document["algorithm"],
        private_pem=document["private_pem"],
        created_at=int(document["created_at"]),
        retired_at=int(retired_at) if retired_at is not None else None,
    )
