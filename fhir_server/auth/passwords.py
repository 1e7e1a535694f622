"""Passwords of local users: what the server accepts, and how it stores and checks them.

The policy follows NIST SP 800-63B (https://pages.nist.gov/800-63-4/sp800-63b.html, section
3.1.1.2): a length floor, a ceiling so that hashing cannot be used to exhaust the server, and a
blocklist of the passwords attackers try first. The character-class rule is the hospital's own
requirement, kept on top of the blocklist because 1,000 entries cannot list every weak password.

Passwords are stored as argon2id hashes (RFC 9106, https://www.rfc-editor.org/rfc/rfc9106).
Hashing and verifying take about 150 ms of CPU each with the defaults, on purpose: call them
from async code through ``asyncio.to_thread`` (argon2-cffi releases the GIL while it hashes).
"""

from __future__ import annotations

import base64
import functools
import secrets
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

if TYPE_CHECKING:
    # Provided lazily by ``__getattr__`` below (PEP 562): the list is read on first use only.
    COMMON_PASSWORDS: frozenset[str]

_ARGON2ID_PREFIX = "$argon2id$"


@functools.cache
def common_passwords() -> frozenset[str]:
    """The blocklist, lowercase; read once, on first use (see ``data/SOURCE.md``)."""
    text = resources.files("fhir_server.auth").joinpath("data/common-passwords.txt")
    return frozenset(line for line in text.read_text(encoding="utf-8").splitlines() if line)


def __getattr__(name: str) -> object:
    if name == "COMMON_PASSWORDS":
        return common_passwords()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _b64(raw: bytes) -> str:
    """Base64 without padding, as in the argon2 encoded form."""
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _normalized(password: str) -> str:
    """NFKC form, so that the same password typed on two keyboards is the same password.

    SP 800-63B 3.1.1.2 asks verifiers to normalize before hashing: "é" may arrive as one code
    point from one device and as "e" plus a combining accent from another.
    """
    return unicodedata.normalize("NFKC", password)


class WeakPassword(ValueError):
    """A password the policy refuses; ``problems`` gives every reason, to be fixed at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must satisfy. Checked when a password is set, never at login."""

    min_length: int = 12
    min_classes: int = 3  # of: lowercase, uppercase, digit, other
    max_length: int = 256  # refuse longer (DoS on hashing)

    def problems(self, password: str, username: str) -> list[str]:
        """Every rule the password breaks, as short human sentences (empty list = acceptable).

        Lengths count characters of the normalized password, which is what gets hashed.
        Username comparisons and the blocklist ignore case: "Password123" is as guessable as
        "password123".
        """
        found: list[str] = []
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:
            # Only a broken client or an attacker sends unpaired surrogates; the hasher could not
            # encode them, so say so here rather than fail later with a server error.
            found.append("The password contains characters that are not valid Unicode text.")
        normalized = _normalized(password)
        if len(normalized) < self.min_length:
            found.append(f"The password must be at least {self.min_length} characters long.")
        if len(normalized) > self.max_length:
            found.append(f"The password must be at most {self.max_length} characters long.")
        if _classes(normalized) < self.min_classes:
            found.append(
                f"The password must mix at least {self.min_classes} of: lowercase letters, "
                "uppercase letters, digits, other characters."
            )
        username_problem = _username_problem(normalized.casefold(), username.casefold())
        if username_problem:
            found.append(username_problem)
        if normalized.casefold() in common_passwords():
            found.append("The password is one of the most commonly used passwords.")
        return found

    def check(self, password: str, username: str) -> None:
        """Raise ``WeakPassword`` listing every broken rule, if any."""
        found = self.problems(password, username)
        if found:
            raise WeakPassword(found)


def _classes(password: str) -> int:
    """How many of the four character classes (lowercase, uppercase, digit, other) appear."""
    lower = upper = digit = other = False
    for char in password:
        if char.islower():
            lower = True
        elif char.isupper():
            upper = True
        elif char.isdigit():
            digit = True
        else:
            other = True
    return lower + upper + digit + other


def _username_problem(password: str, username: str) -> str | None:
    """The one username rule broken, the most specific first (both arguments casefolded)."""
    if not username:
        return None
    if password == username:
        return "The password must not be the username."
    if password == username[::-1]:
        return "The password must not be the username reversed."
    if len(username) >= 4 and username in password:
        return "The password must not contain the username."
    return None


class PasswordHasher:
    """argon2id hashes in the standard encoded form (``$argon2id$v=19$m=...,t=...,p=...$...``).

    Defaults are RFC 9106's second recommended option (section 4: t=3, 64 MiB) with one lane
    instead of four: a server verifies many logins at once, each on one worker thread, so
    extra lanes would multiply the CPU a single request can take without adding safety.
    Salt 16 bytes and tag 32 bytes, as the RFC recommends. Raise the costs (Settings) when the
    hardware allows; ``needs_rehash`` then tells the login path to upgrade stored hashes.
    """

    def __init__(
        self, time_cost: int = 3, memory_cost_kib: int = 65536, parallelism: int = 1
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        self._parameters = argon2.Parameters(
            type=argon2.Type.ID,
            version=argon2.low_level.ARGON2_VERSION,
            salt_len=16,
            hash_len=32,
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
        )
        # Verifying against a random tag costs exactly what a real verification costs, and
        # needs no hashing up front (hashing lazily would make the first unknown-user login slow).
        salt, tag = _b64(secrets.token_bytes(16)), _b64(secrets.token_bytes(32))
        version = argon2.low_level.ARGON2_VERSION
        costs = f"m={memory_cost_kib},t={time_cost},p={parallelism}"
        self._dummy = f"{_ARGON2ID_PREFIX}v={version}${costs}${salt}${tag}"

    def hash(self, password: str) -> str:
        """The encoded ``$argon2id$...`` string of the normalized password, with a fresh salt.

        Raises ``UnicodeEncodeError`` (a ``ValueError``) for unpaired surrogates, which
        ``PasswordPolicy`` refuses first.
        """
        return self._hasher.hash(_normalized(password).encode("utf-8"))

    def verify(self, encoded: str, password: str) -> bool:
        """Whether ``password`` matches; False, never an exception, for a bad or foreign hash.

        Only argon2id is accepted, although argon2-cffi would also verify argon2i and argon2d:
        this server never wrote those, so one in the store is corruption or tampering. The
        argon2id costs are read from the hash, so hashes made with older settings still verify.
        """
        if not encoded.startswith(_ARGON2ID_PREFIX):
            return False
        try:
            return self._hasher.verify(encoded, _normalized(password).encode("utf-8"))
        except (VerificationError, InvalidHashError, UnicodeError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        """Whether ``encoded`` was made with other settings than this hasher's (or is unreadable).

        Call after a successful ``verify``, when the plain password is at hand to hash again.
        """
        try:
            return argon2.extract_parameters(encoded) != self._parameters
        except InvalidHashError:
            return True

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one verification against a fixed hash.

        Called when the user does not exist, so that response time does not reveal which
        usernames exist: the fixed hash has this hasher's costs and a random salt and tag, so
        argon2 does the full work of a real ``verify`` and the result is thrown away.
        """
        self.verify(self._dummy, password)
