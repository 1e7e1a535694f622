"""``rofecare user``, ``rofecare client`` and ``rofecare keys`` as an operator runs them.

Each command is a real ``python -m fhir_server`` subprocess on a data directory; what it did
is then checked through the command line again, or in-process through the same identity
wiring the server uses (``build_identity``), which is what a running server would answer.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fhir_server.auth.oauth import OAuthError
from fhir_server.auth.users import CONSOLE_CLIENT_ID
from fhir_server.cli_identity import bootstrap
from fhir_server.config import Settings
from fhir_server.services.identity import Identity, build_identity

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHEAP_HASHING = {
    "ROFECARE_PASSWORD_HASH_TIME_COST": "1",
    "ROFECARE_PASSWORD_HASH_MEMORY_KIB": "1024",
}
ADMIN_PASSWORD = "Adm1n-correct-horse!"
NURSE_PASSWORD = "Ward-7-night-shift!"
BASE = "http://127.0.0.1:8080/fhir"
TOKEN_URL = "http://127.0.0.1:8080/oauth/token"
LOOPBACK_RULE = "https, or http on the loopback address only"

T = TypeVar("T")


def rofecare(
    command: str, data_dir: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m fhir_server COMMAND --data-dir DATA_DIR`` with cheap argon2 parameters
    (``COMMAND`` split as a shell would)."""
    return subprocess.run(
        [sys.executable, "-m", "fhir_server", *shlex.split(command), "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ROFECARE_")},
            **CHEAP_HASHING,
        },
        timeout=60,
    )


def ok(command: str, data_dir: Path, stdin: str | None = None) -> str:
    done = rofecare(command, data_dir, stdin)
    assert done.returncode == 0, (command, done.returncode, done.stdout, done.stderr)
    return done.stdout


def add_nurse(data_dir: Path) -> None:
    added = ok("user add nurse1 --role nurse --password-stdin", data_dir, NURSE_PASSWORD + "\n")
    assert added.strip() == "Added nurse1 (roles: nurse)"


def listed_users(data_dir: Path) -> dict[str, list[str]]:
    """``rofecare user list`` as {username: [roles, fhirUser, state]}."""
    rows = [line.split("\t") for line in ok("user list", data_dir).splitlines()]
    return {row[0]: row[1:] for row in rows}


def settings(data_dir: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir, password_hash_time_cost=1, password_hash_memory_kib=1024, **extra
    )


def in_process(data_dir: Path, work: Callable[[Identity], Awaitable[T]]) -> T:
    """Run ``work(identity)`` against the data directory, as a server worker would."""

    async def main() -> T:
        identity = build_identity(settings(data_dir), audit=None)
        await identity.store.open()
        try:
            return await work(identity)
        finally:
            await identity.store.close()

    return asyncio.run(main())


def console_bootstrap(data_dir: Path) -> None:
    """What the first ``rofecare serve`` does before it answers (admin + console client)."""
    bootstrap(settings(data_dir, admin_password=ADMIN_PASSWORD))


def password_grant(data_dir: Path, username: str, password: str) -> dict[str, Any] | OAuthError:
    """The token endpoint's answer to a password grant (rofecare-console), or its error."""
    form = {
        "grant_type": "password",
        "client_id": CONSOLE_CLIENT_ID,
        "username": username,
        "password": password,
    }

    async def work(identity: Identity) -> dict[str, Any] | OAuthError:
        try:
            answer: dict[str, Any] = await identity.authorization_server.token(
                form, None, issuer=BASE, token_url=TOKEN_URL
            )
        except OAuthError as error:
            return error
        return answer

    return in_process(data_dir, work)


def issued(result: dict[str, Any] | OAuthError) -> dict[str, Any]:
    assert not isinstance(result, OAuthError), f"no token: {result}"
    return result


def refused(result: dict[str, Any] | OAuthError) -> str:
    assert isinstance(result, OAuthError), "a token was issued"
    return result.error


# -- users -----------------------------------------------------------------------------------


def test_user_add_reads_the_password_from_stdin_and_refuses_weak_ones_and_unknown_roles(
    tmp_path: Path,
) -> None:
    add = "user add nurse1 --role nurse --password-stdin"
    weak = rofecare(add, tmp_path, "short\n")
    assert weak.returncode == 2, weak
    assert "The password is refused" in weak.stderr, weak.stderr
    assert "at least 12 characters" in weak.stderr, weak.stderr
    with_username = rofecare(add, tmp_path, "nurse1-Nurse1-nurse1\n")
    assert with_username.returncode == 2, with_username
    assert "must not contain the username" in with_username.stderr, with_username.stderr
    unknown_role = rofecare(
        "user add nurse1 --role wizard --password-stdin", tmp_path, NURSE_PASSWORD + "\n"
    )
    assert unknown_role.returncode == 2, unknown_role
    assert "invalid choice: 'wizard'" in unknown_role.stderr, unknown_role.stderr
    assert listed_users(tmp_path) == {}  # the refused commands added nobody

    added = rofecare(add, tmp_path, NURSE_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert NURSE_PASSWORD not in added.stdout + added.stderr
    assert listed_users(tmp_path) == {"nurse1": ["nurse", "-", "active"]}


def test_roles_are_listed_granted_and_a_user_keeps_at_least_one(tmp_path: Path) -> None:
    add_nurse(tmp_path)
    ok(
        "user add drsmith --role physician --practitioner dr1 --password-stdin",
        tmp_path,
        "Dr-Smith-2024-cardio\n",
    )
    assert listed_users(tmp_path) == {
        "drsmith": ["physician", "Practitioner/dr1", "active"],
        "nurse1": ["nurse", "-", "active"],
    }
    granted = ok("user grant nurse1 pharmacist", tmp_path)
    assert granted.strip() == "nurse1: nurse, pharmacist"
    assert listed_users(tmp_path)["nurse1"][0] == "nurse,pharmacist"
    assert ok("user revoke nurse1 nurse", tmp_path).strip() == "nurse1: pharmacist"
    last = rofecare("user revoke nurse1 pharmacist", tmp_path)
    assert last.returncode == 2, last
    assert "a user keeps at least one role" in last.stderr, last.stderr
    unknown = rofecare("user grant nurse1 wizard", tmp_path)
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr, unknown
    assert listed_users(tmp_path)["nurse1"] == ["pharmacist", "-", "active"]


def test_a_disabled_user_gets_no_token_until_enabled_again(tmp_path: Path) -> None:
    console_bootstrap(tmp_path)
    add_nurse(tmp_path)
    assert "access_token" in issued(password_grant(tmp_path, "nurse1", NURSE_PASSWORD))
    assert ok("user disable nurse1", tmp_path).strip() == "nurse1 is disabled"
    assert listed_users(tmp_path)["nurse1"][2] == "disabled"
    assert refused(password_grant(tmp_path, "nurse1", NURSE_PASSWORD)) == "invalid_grant"
    assert ok("user enable nurse1", tmp_path).strip() == "nurse1 is enabled"
    assert "access_token" in issued(password_grant(tmp_path, "nurse1", NURSE_PASSWORD))


def test_set_password_clears_a_lockout(tmp_path: Path) -> None:
    console_bootstrap(tmp_path)
    add_nurse(tmp_path)
    for _ in range(settings(tmp_path).lockout_threshold):
        assert refused(password_grant(tmp_path, "nurse1", "Guess-guess-1")) == "invalid_grant"
    assert listed_users(tmp_path)["nurse1"][2] == "active, locked"
    # Locked: even the right password is refused now.
    assert refused(password_grant(tmp_path, "nurse1", NURSE_PASSWORD)) == "invalid_grant"
    new_password = "Night-shift-8-ward!"
    reset = ok("user set-password nurse1 --password-stdin", tmp_path, new_password + "\n")
    assert "lockout is cleared" in reset and new_password not in reset
    assert listed_users(tmp_path)["nurse1"][2] == "active"
    assert "access_token" in issued(password_grant(tmp_path, "nurse1", new_password))
    assert refused(password_grant(tmp_path, "nurse1", NURSE_PASSWORD)) == "invalid_grant"


def test_a_user_added_before_the_first_start_can_still_use_the_console(tmp_path: Path) -> None:
    add_nurse(tmp_path)
    console_bootstrap(tmp_path)
    assert CONSOLE_CLIENT_ID in ok("client list", tmp_path)
    assert "access_token" in issued(password_grant(tmp_path, "nurse1", NURSE_PASSWORD))


# -- clients ---------------------------------------------------------------------------------


def test_a_client_secret_is_printed_once_and_never_listed(tmp_path: Path) -> None:
    added = rofecare(
        'client add ward-board --scope "user/Patient.rs openid fhirUser" '
        "--redirect-uri https://board.example/cb --secret",
        tmp_path,
    )
    assert added.returncode == 0, added.stderr
    found = re.findall(r"client secret \(shown once, store it now\): (\S+)", added.stdout)
    assert len(found) == 1, added.stdout
    secret = found[0]
    assert added.stdout.count(secret) == 1 and secret not in added.stderr
    assert "Added confidential client ward-board" in added.stdout
    listing = ok("client list", tmp_path)
    assert "ward-board\tconfidential\tauthorization_code,refresh_token" in listing
    assert secret not in listing
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("identity.sqlite3*"))
    assert secret.encode() not in stored  # kept as a digest only

    async def authenticate(identity: Identity, given: str) -> str:
        form = {"client_id": "ward-board", "client_secret": given}
        try:
            client = await identity.authorization_server.authenticate_client(form, None, TOKEN_URL)
        except OAuthError as error:
            return error.error
        return client.client_id

    assert in_process(tmp_path, lambda identity: authenticate(identity, secret)) == "ward-board"
    wrong = in_process(tmp_path, lambda identity: authenticate(identity, secret[:-1] + "x"))
    assert wrong == "invalid_client"


def test_a_plain_http_redirect_uri_is_refused_off_the_loopback(tmp_path: Path) -> None:
    add = 'client add {} --scope "launch/patient patient/Patient.rs" --redirect-uri {}'
    remote = rofecare(add.format("remote", "http://app.example/cb"), tmp_path)
    assert remote.returncode == 2, remote
    assert LOOPBACK_RULE in remote.stderr and "http://app.example/cb" in remote.stderr
    for client_id, uri in [
        ("native-v4", "http://127.0.0.1:8765/cb"),
        ("native-name", "http://localhost/cb"),
        ("web", "https://app.example/cb"),
    ]:
        ok(add.format(client_id, uri), tmp_path)
    listed = [line.split("\t")[0] for line in ok("client list", tmp_path).splitlines()]
    assert sorted(listed) == ["native-name", "native-v4", "web"]


@pytest.mark.parametrize(
    "uri",
    ["http://localhost.attacker.example/cb", "http://127.0.0.1@attacker.example/cb"],
)
def test_a_remote_host_disguised_as_loopback_is_refused(tmp_path: Path, uri: str) -> None:
    done = rofecare(
        f'client add sneaky --scope "launch/patient patient/Patient.rs" --redirect-uri {uri}',
        tmp_path,
    )
    assert done.returncode == 2, (uri, done.stdout)
    assert LOOPBACK_RULE in done.stderr or "no user or password" in done.stderr


# -- keys ------------------------------------------------------------------------------------


def test_keys_rotate_prints_the_new_kid(tmp_path: Path) -> None:
    kids = []
    for _ in range(2):
        printed = ok("keys rotate", tmp_path)
        match = re.match(r"New signing key (\S+) \(RS256\)", printed)
        assert match is not None, printed
        kids.append(match.group(1))
    assert kids[0] != kids[1]

    async def stored(identity: Identity) -> list[tuple[str, bool]]:
        keys = await identity.store.signing_keys()
        return [(key.kid, key.retired_at is None) for key in keys]

    # The newest key signs; the one before is retired (and still verifies its tokens).
    assert sorted(in_process(tmp_path, stored)) == sorted([(kids[0], False), (kids[1], True)])
