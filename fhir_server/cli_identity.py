"""``rofecare user``, ``rofecare client`` and ``rofecare keys``: identity administration.

They work on the private identity store directly (the operator holds the data directory),
so the first administrator can be created, or a locked-out one recovered, without a
running server. Passwords are read from the terminal without echo, or from standard input
with ``--password-stdin`` (scripts); never from the command line, where ``ps`` and shell
history would keep them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.auth.roles import ROLE_NAMES
from fhir_server.auth.scopes import InvalidScope
from fhir_server.config import Settings

if TYPE_CHECKING:  # the identity stack (JOSE, both stores) is imported by the commands
    from fhir_server.auth.identity import ClientKind, GrantType
    from fhir_server.services.identity import Identity

GRANTS: tuple[GrantType, ...] = (
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "password",
)


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in ("data_dir", "store")}
    return Settings(**{name: value for name, value in flags.items() if value is not None})


def _run(args: argparse.Namespace, work: Callable[[Identity], Awaitable[int]]) -> int:
    from fhir_server.auth.users import IdentityError
    from fhir_server.services.identity import build_identity

    async def main() -> int:
        identity = build_identity(_settings(args), audit=None)
        await identity.store.open()
        try:
            return await work(identity)
        except (IdentityError, InvalidScope) as error:
            print(f"rofecare: {error}", file=sys.stderr)
            return 2
        finally:
            await identity.store.close()

    return asyncio.run(main())


def _password(args: argparse.Namespace, prompt: str = "Password: ") -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != first:
        raise SystemExit("rofecare: the two passwords differ")
    return first


# -- users -----------------------------------------------------------------------------------


def user_add(args: argparse.Namespace) -> int:
    password = _password(args)

    async def work(identity: Identity) -> int:
        user = await identity.users.add_user(
            args.username,
            password,
            args.role,
            fhir_user=args.practitioner and f"Practitioner/{args.practitioner}",
            must_change=args.temporary,
        )
        print(f"Added {user.username} (roles: {', '.join(user.roles)})")
        return 0

    return _run(args, work)


def user_list(args: argparse.Namespace) -> int:
    async def work(identity: Identity) -> int:
        for user in await identity.store.users():
            state = "active" if user.active else "disabled"
            if user.locked_until > time.time():
                state += ", locked"
            print(f"{user.username}\t{','.join(user.roles)}\t{user.fhir_user or '-'}\t{state}")
        return 0

    return _run(args, work)


def user_set_active(active: bool) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        async def work(identity: Identity) -> int:
            await identity.users.set_active(args.username, active)
            print(f"{args.username} is {'enabled' if active else 'disabled'}")
            return 0

        return _run(args, work)

    return command


def user_set_password(args: argparse.Namespace) -> int:
    """An administrator's reset: clears a lockout; ``--temporary`` makes the user choose a
    new one at the next sign-in."""
    password = _password(args, "New password: ")

    async def work(identity: Identity) -> int:
        await identity.users.set_password(args.username, password, must_change=args.temporary)
        print(f"Password of {args.username} set; any lockout is cleared")
        return 0

    return _run(args, work)


def user_grant(args: argparse.Namespace) -> int:
    async def work(identity: Identity) -> int:
        roles = await identity.users.grant(args.username, args.role)
        print(f"{args.username}: {', '.join(roles)}")
        return 0

    return _run(args, work)


def user_revoke(args: argparse.Namespace) -> int:
    async def work(identity: Identity) -> int:
        roles = await identity.users.revoke(args.username, args.role)
        print(f"{args.username}: {', '.join(roles)}")
        return 0

    return _run(args, work)


# -- clients ---------------------------------------------------------------------------------


def client_add(args: argparse.Namespace) -> int:
    jwks: dict[str, Any] | None = None
    if args.jwks:
        jwks = json.loads(Path(args.jwks).read_text())
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise SystemExit('rofecare: --jwks must be a JSON Web Key Set ({"keys": [...]})')
    kind: ClientKind = "confidential" if (args.secret or jwks) else "public"

    async def work(identity: Identity) -> int:
        client, secret = await identity.users.add_client(
            args.client_id,
            name=args.name or args.client_id,
            kind=kind,
            grant_types=args.grant or _default_grants(kind, jwks is not None),
            scope=args.scope,
            redirect_uris=args.redirect_uri or (),
            jwks=jwks,
            with_secret=args.secret,
        )
        print(f"Added {kind} client {client.client_id} ({', '.join(client.grant_types)})")
        if secret is not None:
            print(f"client secret (shown once, store it now): {secret}")
        return 0

    return _run(args, work)


def _default_grants(kind: ClientKind, has_keys: bool) -> tuple[GrantType, ...]:
    if has_keys:
        return ("client_credentials",)
    return ("authorization_code", "refresh_token")


def client_list(args: argparse.Namespace) -> int:
    async def work(identity: Identity) -> int:
        for client in await identity.store.clients():
            print(
                f"{client.client_id}\t{client.kind}\t{','.join(client.grant_types)}\t{client.scope}"
            )
        return 0

    return _run(args, work)


def keys_rotate(args: argparse.Namespace) -> int:
    async def work(identity: Identity) -> int:
        key = await identity.keys.rotate()
        print(
            f"New signing key {key.kid} ({key.algorithm}); the old one verifies the tokens it "
            "signed until they expire. Running workers pick it up within a minute."
        )
        return 0

    return _run(args, work)


# -- first start -----------------------------------------------------------------------------


def bootstrap(settings: Settings) -> None:
    """Before the first ``rofecare serve`` answers: the admin user and the console client.

    A generated password is printed here, once, and is never stored in clear or logged."""
    from fhir_server.auth.users import IdentityError
    from fhir_server.services.identity import build_identity

    async def main() -> str | None:
        identity = build_identity(settings, audit=None)
        await identity.store.open()
        try:
            given = settings.admin_password.get_secret_value() if settings.admin_password else None
            return await identity.users.bootstrap(given)
        finally:
            await identity.store.close()

    try:
        generated = asyncio.run(main())
    except IdentityError as refused:
        raise SystemExit(f"rofecare: ROFECARE_ADMIN_PASSWORD cannot be used: {refused}") from None
    if generated is not None:
        # Straight to the terminal (not the log): the one place it is ever shown.
        message = (
            "\nFirst start: created the user 'admin' (role admin) with the password\n\n"
            f"    {generated}\n\n"
            "It is shown only this once. Sign in with it (client 'rofecare-console'), then "
            "add named users:\n  rofecare user add NAME --role physician\n\n"
        )
        sys.stderr.write(message)
        sys.stderr.flush()
    os.environ.pop("ROFECARE_ADMIN_PASSWORD", None)  # not inherited by the workers


def add_commands(commands: Any, store_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    users = commands.add_parser("user", help="manage staff users (private identity store)")
    user_commands = users.add_subparsers(dest="user_command", required=True)

    add = user_commands.add_parser("add", help="add a user")
    add.add_argument("username")
    add.add_argument(
        "--role", action="append", required=True, choices=ROLE_NAMES, help="repeatable"
    )
    add.add_argument("--practitioner", help="the id of the Practitioner this user is")
    add.add_argument("--temporary", action="store_true", help="must change it at first sign-in")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=user_add)

    listing = user_commands.add_parser("list", help="list users")
    listing.set_defaults(handler=user_list)

    for name, active in (("disable", False), ("enable", True)):
        toggle = user_commands.add_parser(name, help=f"{name} a user")
        toggle.add_argument("username")
        toggle.set_defaults(handler=user_set_active(active))

    reset = user_commands.add_parser("set-password", help="reset a password (clears lockout)")
    reset.add_argument("username")
    reset.add_argument("--temporary", action="store_true", help="must change it at sign-in")
    reset.add_argument("--password-stdin", action="store_true")
    reset.set_defaults(handler=user_set_password)

    for name, handler in (("grant", user_grant), ("revoke", user_revoke)):
        change = user_commands.add_parser(name, help=f"{name} a role")
        change.add_argument("username")
        change.add_argument("role", choices=ROLE_NAMES)
        change.set_defaults(handler=handler)

    clients = commands.add_parser("client", help="register SMART apps and backend services")
    client_commands = clients.add_subparsers(dest="client_command", required=True)
    register = client_commands.add_parser(
        "add",
        help="register a client",
        description="A public app (PKCE, no secret) by default; --secret makes a confidential "
        "one with a generated secret; --jwks a backend service (private_key_jwt).",
    )
    register.add_argument("client_id")
    register.add_argument("--name")
    register.add_argument("--scope", required=True, help="what it may ever be granted")
    register.add_argument("--redirect-uri", action="append", dest="redirect_uri")
    register.add_argument("--grant", action="append", choices=GRANTS)
    register.add_argument("--secret", action="store_true", help="generate a client secret")
    register.add_argument("--jwks", help="file with the client's public JWKS")
    register.set_defaults(handler=client_add)
    client_listing = client_commands.add_parser("list", help="list clients")
    client_listing.set_defaults(handler=client_list)

    keys = commands.add_parser("keys", help="token signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_commands.add_parser("rotate", help="start signing with a new key now")
    rotate.set_defaults(handler=keys_rotate)

    for parser in (
        add,
        listing,
        reset,
        register,
        client_listing,
        rotate,
        *[user_commands.choices[name] for name in ("disable", "enable", "grant", "revoke")],
    ):
        store_flags(parser)
