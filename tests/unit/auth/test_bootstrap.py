"""The first start, also when several servers start together on one identity store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fhir_server.auth.passwords import PasswordHasher, PasswordPolicy
from fhir_server.auth.sqlite_identity import SqliteIdentityStore
from fhir_server.auth.users import CONSOLE_CLIENT_ID, LockoutPolicy, Users


def _users(path: Path) -> Users:
    return Users(
        SqliteIdentityStore(path),
        PasswordHasher(time_cost=1, memory_cost_kib=1024),
        PasswordPolicy(),
        LockoutPolicy(),
    )


async def test_two_servers_starting_together_make_one_admin(tmp_path: Path) -> None:
    servers = [_users(tmp_path / "identity.sqlite3") for _ in range(4)]
    for server in servers:
        await server.store.open()
    try:
        printed = await asyncio.gather(*(server.bootstrap(None) for server in servers))
        assert sum(password is not None for password in printed) == 1  # one password shown
        password = next(p for p in printed if p is not None)
        assert [u.username for u in await servers[0].store.users()] == ["admin"]
        assert (await servers[1].authenticate("admin", password)).roles == ("admin",)
        assert await servers[2].store.client(CONSOLE_CLIENT_ID) is not None
        assert await servers[3].bootstrap(None) is None  # later starts change nothing
    finally:
        for server in servers:
            await server.store.close()


async def test_a_given_password_is_never_printed(tmp_path: Path) -> None:
    users = _users(tmp_path / "identity.sqlite3")
    await users.store.open()
    try:
        assert await users.bootstrap("Chosen-root-pass-1!") is None
        assert (await users.authenticate("admin", "Chosen-root-pass-1!")).username == "admin"
    finally:
        await users.store.close()
