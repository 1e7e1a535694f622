"""Who is asking: the access context of the request being served.

A context variable, like the transaction stage: the HTTP layer sets it once per request
from the verified token, and every service call below (a REST interaction, each entry of a
transaction Bundle, an $operation, an _include) checks it without threading a parameter
through every signature. Outside any request (the command-line tools, the loader, start-up)
there is no context and the caller is the server itself: trusted, as the operator who runs
the command already holds the data files.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

from fhir_server.auth.scopes import ScopeSet


@dataclass(frozen=True)
class Access:
    """What a verified access token grants, and who holds it (for the audit trail).

    One object per token, shared by its requests (the network address of each request is
    in ``client_address()``)."""

    subject: str  # the user id, or the client id of a backend service
    client_id: str
    scopes: ScopeSet
    username: str | None = None
    patient: str | None = None  # SMART launch context: patient/ scopes are confined to it
    fhir_user: str | None = None  # e.g. "Practitioner/123"
    roles: tuple[str, ...] = ()
    token_id: str = ""

    @property
    def who(self) -> str:
        """The requestor as the audit trail names it."""
        return self.fhir_user or (f"user {self.username}" if self.username else self.client_id)


_current: ContextVar[Access | None] = ContextVar("rofecare_access", default=None)


def current_access() -> Access | None:
    return _current.get()


def enter(access: Access | None) -> Token[Access | None]:
    return _current.set(access)


def leave(token: Token[Access | None]) -> None:
    _current.reset(token)


_address: ContextVar[str | None] = ContextVar("rofecare_client_address", default=None)


def client_address() -> str | None:
    """The network address of the client being served (for the audit of logins, which
    happen before there is any access context)."""
    return _address.get()


def set_client_address(address: str | None) -> None:
    """Set for the current task only (each request runs in its own task)."""
    _address.set(address)
