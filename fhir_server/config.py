"""Runtime settings, read once at start-up and injected; never a module-level global.

Every field can be set by an environment variable with the ``ROFECARE_`` prefix
(``ROFECARE_PORT=9090``) or by the matching ``rofecare serve`` flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server configuration. Defaults give a working single-hospital server with no setup."""

    model_config = SettingsConfigDict(env_prefix="ROFECARE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    data_dir: Path = Path("rofecare-data")
    base_path: str = "/fhir"
    public_base_url: str | None = Field(
        default=None,
        description="Absolute FHIR base used in links (e.g. behind a proxy); default: from request",
    )
    store: str = Field(
        default="sqlite",
        description=(
            "'sqlite' (a file under data_dir), a sqlite:///path URL, or a MongoDB URI "
            "(mongodb://host:port/db?replicaSet=rs0, mongodb+srv://...): a replica set"
        ),
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL: a write is on disk before it is acknowledged (survives power loss)",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=64, ge=8, le=1000)
    max_bundle_entries: int = Field(
        default=10_000, ge=1, description="Entries a transaction or batch Bundle may hold"
    )
    max_bundle_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Size limit of a POSTed Bundle"
    )
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    allow_client_ids: bool = Field(
        default=True, description="PUT to a new id creates it (update-as-create)"
    )
    search_total_limit: int = Field(
        default=1000,
        ge=0,
        description="A search without _total carries Bundle.total when at most this many match",
    )
    search_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A search running longer is stopped with a 503"
    )
    search_indexing: bool = Field(
        default=True,
        description="Off only to measure what indexing costs: searches then find nothing",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    profile_validation: Literal["enforce", "warn", "off"] = Field(
        default="enforce",
        description=(
            "Rofecare and declared profiles on every write: enforce refuses a faulty resource "
            "(422), warn accepts it and logs the faults, off checks the R4 structure only"
        ),
    )

    # -- identity and authorization (SMART on FHIR) --------------------------------------
    auth_enabled: bool = Field(
        default=True,
        description=(
            "Every FHIR interaction needs a bearer token. Off only on a loopback address, "
            "for development and benchmarks: the server refuses to start otherwise"
        ),
    )
    access_token_lifetime_seconds: int = Field(default=900, ge=30, le=24 * 3600)
    refresh_token_lifetime_seconds: int = Field(default=12 * 3600, ge=60)
    password_grant_enabled: bool = Field(
        default=True, description="Resource-owner password grant for first-party clients"
    )
    password_min_length: int = Field(default=12, ge=8, le=128)
    password_min_classes: int = Field(default=3, ge=1, le=4)
    lockout_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed logins that lock an account"
    )
    lockout_seconds: int = Field(default=900, ge=1, description="How long a lock lasts")
    password_hash_time_cost: int = Field(
        default=3, ge=1, le=20, description="argon2id passes (RFC 9106); lower only in tests"
    )
    password_hash_memory_kib: int = Field(
        default=64 * 1024, ge=1024, le=4 * 1024 * 1024, description="argon2id memory (KiB)"
    )
    signing_algorithm: Literal["RS256", "ES256"] = "RS256"
    signing_key_days: int = Field(
        default=30, ge=1, description="A signing key older than this is replaced (rotation)"
    )
    admin_password: SecretStr | None = Field(
        default=None,
        description="Password of the first 'admin' user; default: a random one printed once",
    )

    def uses_mongodb(self) -> bool:
        return self.store.startswith(("mongodb://", "mongodb+srv://"))

    def store_description(self) -> str:
        """Where the data lives, for logs and messages: a URI without its password."""
        if self.store == "sqlite" or self.store.startswith("sqlite:///"):
            return str(self.sqlite_path())
        parts = urlsplit(self.store)
        if "@" not in parts.netloc:
            return self.store
        user, _, hosts = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{hosts}"))

    def identity_path(self) -> Path:
        """The private identity store (users, credentials, clients, keys): never served."""
        if self.store.startswith("sqlite:///"):
            database = self.sqlite_path()
            return database.with_name(database.stem + ".identity.sqlite3")
        return self.data_dir / "identity.sqlite3"

    def binds_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost")

    def sqlite_path(self) -> Path:
        """The SQLite database file this configuration points at."""
        if self.store.startswith("sqlite:///"):
            return Path(self.store.removeprefix("sqlite:///"))
        return self.data_dir / "rofecare.sqlite3"
