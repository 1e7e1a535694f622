"""The identity store in its own SQLite file beside the FHIR database.

A separate file, not tables in the FHIR database: nothing that reads or copies the FHIR
store (search, history, ``rofecare load``, a backup of the clinical data handed to a
partner) can reach a password hash or a signing key by mistake. The file is created
readable by its owner only. Calls are rare (logins, token exchanges, administration; a
request's token is checked without it), so one connection behind a lock, used from a
thread, is enough; several worker processes share the file through SQLite's own locking.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fhir_server.auth.identity import AuthorizationCode, Client, RefreshToken, User
from fhir_server.auth.keys import SigningKey

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    fhir_user TEXT,
    active INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_roles (
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scope TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    secret_hash TEXT,
    jwks TEXT,
    active INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    digest TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    patient TEXT,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
CREATE TABLE IF NOT EXISTS authorization_codes (
    digest TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    patient TEXT,
    nonce TEXT,
    auth_time INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS assertion_jtis (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
"""

USER_COLUMNS = (
    "id, username, password_hash, fhir_user, active, failed_attempts, locked_until, "
    "must_change_password, created_at"
)


class SqliteIdentityStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if not self._path.exists():
            # Created private before the first byte is written (umask may be lax).
            descriptor = os.open(self._path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(descriptor)
        connection = sqlite3.connect(
            self._path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(SCHEMA)
        self._connection = connection

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            if self._connection is None:
                self._open()
            assert self._connection is not None
            with self._lock:
                self._connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._connection)
                except BaseException:
                    self._connection.execute("ROLLBACK")
                    raise
                self._connection.execute("COMMIT")
                return result

        return await asyncio.to_thread(locked)

    # -- users -------------------------------------------------------------------------------

    async def add_user(self, user: User) -> None:
        def run(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    f"INSERT INTO users ({USER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",  # noqa: S608
                    (
                        user.id,
                        user.username,
                        user.password_hash,
                        user.fhir_user,
                        int(user.active),
                        user.failed_attempts,
                        user.locked_until,
                        int(user.must_change_password),
                        user.created_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"The username {user.username!r} is taken") from None
            db.executemany(
                "INSERT INTO user_roles (user_id, role) VALUES (?, ?)",
                [(user.id, role) for role in user.roles],
            )

        await self._run(run)

    async def user_by_name(self, username: str) -> User | None:
        return await self._run(lambda db: _one_user(db, "username = ?", username))

    async def user_by_id(self, user_id: str) -> User | None:
        return await self._run(lambda db: _one_user(db, "id = ?", user_id))

    async def users(self) -> list[User]:
        def run(db: sqlite3.Connection) -> list[User]:
            sql = f"SELECT {USER_COLUMNS} FROM users ORDER BY username"  # noqa: S608
            rows = db.execute(sql).fetchall()
            return [_user(db, row) for row in rows]

        return await self._run(run)

    async def count_users(self) -> int:
        def run(db: sqlite3.Connection) -> int:
            count: int = db.execute("SELECT count(*) FROM users").fetchone()[0]
            return count

        return await self._run(run)

    async def set_password(self, user_id: str, password_hash: str, *, must_change: bool) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE users SET password_hash = ?, must_change_password = ?, "
                "failed_attempts = 0, locked_until = 0 WHERE id = ?",
                (password_hash, int(must_change), user_id),
            )
        )

    async def set_active(self, user_id: str, active: bool) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE users SET active = ? WHERE id = ?", (int(active), user_id)
            )
        )

    async def set_roles(self, user_id: str, roles: tuple[str, ...]) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM user_roles WHERE user_id = ?", (user_id,))
            db.executemany(
                "INSERT INTO user_roles (user_id, role) VALUES (?, ?)",
                [(user_id, role) for role in roles],
            )

        await self._run(run)

    async def record_failure(self, user_id: str, threshold: int, lock_until: int) -> User:
        def run(db: sqlite3.Connection) -> User:
            db.execute(
                "UPDATE users SET failed_attempts = failed_attempts + 1 WHERE id = ?", (user_id,)
            )
            db.execute(
                "UPDATE users SET locked_until = ?, failed_attempts = 0 "
                "WHERE id = ? AND failed_attempts >= ?",
                (lock_until, user_id, threshold),
            )
            user = _one_user(db, "id = ?", user_id)
            assert user is not None
            return user

        return await self._run(run)

    async def record_success(self, user_id: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE users SET failed_attempts = 0, locked_until = 0 WHERE id = ?", (user_id,)
            )
        )

    # -- clients -----------------------------------------------------------------------------

    async def add_client(self, client: Client) -> None:
        def run(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO clients (client_id, name, kind, grant_types, scope, "
                    "redirect_uris, secret_hash, jwks, active, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        client.client_id,
                        client.name,
                        client.kind,
                        orjson.dumps(list(client.grant_types)).decode(),
                        client.scope,
                        orjson.dumps(list(client.redirect_uris)).decode(),
                        client.secret_hash,
                        orjson.dumps(client.jwks).decode() if client.jwks is not None else None,
                        int(client.active),
                        client.created_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"The client id {client.client_id!r} is taken") from None

        await self._run(run)

    async def client(self, client_id: str) -> Client | None:
        def run(db: sqlite3.Connection) -> Client | None:
            row = db.execute(f"{CLIENT_SELECT} WHERE client_id = ?", (client_id,)).fetchone()
            return _client(row) if row else None

        return await self._run(run)

    async def clients(self) -> list[Client]:
        def run(db: sqlite3.Connection) -> list[Client]:
            return [_client(row) for row in db.execute(f"{CLIENT_SELECT} ORDER BY client_id")]

        return await self._run(run)

    # -- refresh tokens and codes ------------------------------------------------------------

    async def add_refresh_token(self, token: RefreshToken) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO refresh_tokens (digest, family, client_id, user_id, scope, patient, "
                "issued_at, expires_at, used, revoked) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    token.digest,
                    token.family,
                    token.client_id,
                    token.user_id,
                    token.scope,
                    token.patient,
                    token.issued_at,
                    token.expires_at,
                    int(token.used),
                    int(token.revoked),
                ),
            )
        )

    async def refresh_token(self, digest: str) -> RefreshToken | None:
        return await self._run(lambda db: _refresh_token(db, digest))

    async def use_refresh_token(self, digest: str) -> RefreshToken | None:
        def run(db: sqlite3.Connection) -> RefreshToken | None:
            token = _refresh_token(db, digest)
            if token is not None:
                db.execute("UPDATE refresh_tokens SET used = 1 WHERE digest = ?", (digest,))
            return token

        return await self._run(run)

    async def revoke_family(self, family: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?", (family,)
            )
        )

    async def revoke_user_tokens(self, user_id: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?", (user_id,)
            )
        )

    async def add_code(self, code: AuthorizationCode) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO authorization_codes (digest, client_id, user_id, redirect_uri, scope, "
                "code_challenge, patient, nonce, auth_time, expires_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    code.digest,
                    code.client_id,
                    code.user_id,
                    code.redirect_uri,
                    code.scope,
                    code.code_challenge,
                    code.patient,
                    code.nonce,
                    code.auth_time,
                    code.expires_at,
                ),
            )
        )

    async def take_code(self, digest: str) -> AuthorizationCode | None:
        def run(db: sqlite3.Connection) -> AuthorizationCode | None:
            row = db.execute(
                "SELECT digest, client_id, user_id, redirect_uri, scope, code_challenge, "
                "expires_at, patient, nonce, auth_time FROM authorization_codes WHERE digest = ?",
                (digest,),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM authorization_codes WHERE digest = ?", (digest,))
            return AuthorizationCode(*row)

        return await self._run(run)

    async def remember_jti(self, client_id: str, jti: str, expires_at: int, now: int) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM assertion_jtis WHERE expires_at < ?", (now,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO assertion_jtis (client_id, jti, expires_at) VALUES (?,?,?)",
                (client_id, jti, expires_at),
            )
            return cursor.rowcount == 0

        return await self._run(run)

    # -- signing keys ------------------------------------------------------------------------

    async def signing_keys(self) -> list[SigningKey]:
        def run(db: sqlite3.Connection) -> list[SigningKey]:
            rows = db.execute(
                "SELECT kid, algorithm, private_pem, created_at, retired_at FROM signing_keys "
                "ORDER BY created_at"
            ).fetchall()
            return [SigningKey(*row) for row in rows]

        return await self._run(run)

    async def replace_signing_keys(self, expected: list[str], keys: list[SigningKey]) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            stored = [kid for (kid,) in db.execute("SELECT kid FROM signing_keys")]
            if sorted(stored) != sorted(expected):
                return False
            db.execute("DELETE FROM signing_keys")
            db.executemany(
                "INSERT INTO signing_keys (kid, algorithm, private_pem, created_at, retired_at) "
                "VALUES (?,?,?,?,?)",
                [(k.kid, k.algorithm, k.private_pem, k.created_at, k.retired_at) for k in keys],
            )
            return True

        return await self._run(run)


CLIENT_SELECT = (
    "SELECT client_id, name, kind, grant_types, scope, redirect_uris, secret_hash, jwks, "
    "active, created_at FROM clients"
)


def _one_user(db: sqlite3.Connection, where: str, value: str) -> User | None:
    row = db.execute(f"SELECT {USER_COLUMNS} FROM users WHERE {where}", (value,)).fetchone()  # noqa: S608 (fixed fragments)
    return _user(db, row) if row else None


def _user(db: sqlite3.Connection, row: tuple[Any, ...]) -> User:
    roles = tuple(
        role
        for (role,) in db.execute(
            "SELECT role FROM user_roles WHERE user_id = ? ORDER BY role", (row[0],)
        )
    )
    return User(
        id=row[0],
        username=row[1],
        password_hash=row[2],
        fhir_user=row[3],
        roles=roles,
        active=bool(row[4]),
        failed_attempts=row[5],
        locked_until=row[6],
        must_change_password=bool(row[7]),
        created_at=row[8],
    )


def _client(row: tuple[Any, ...]) -> Client:
    return Client(
        client_id=row[0],
        name=row[1],
        kind=row[2],
        grant_types=tuple(orjson.loads(row[3])),
        scope=row[4],
        redirect_uris=tuple(orjson.loads(row[5])),
        secret_hash=row[6],
        jwks=orjson.loads(row[7]) if row[7] else None,
        active=bool(row[8]),
        created_at=row[9],
    )


def _refresh_token(db: sqlite3.Connection, digest: str) -> RefreshToken | None:
    row = db.execute(
        "SELECT digest, family, client_id, user_id, scope, issued_at, expires_at, patient, "
        "used, revoked FROM refresh_tokens WHERE digest = ?",
        (digest,),
    ).fetchone()
    if row is None:
        return None
    return RefreshToken(
        digest=row[0],
        family=row[1],
        client_id=row[2],
        user_id=row[3],
        scope=row[4],
        issued_at=row[5],
        expires_at=row[6],
        patient=row[7],
        used=bool(row[8]),
        revoked=bool(row[9]),
    )
