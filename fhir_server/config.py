"""Runtime settings, read once at start-up and injected; never a module-level global.

Every field can be set by an environment variable with the ``ROFECARE_`` prefix
(``ROFECARE_PORT=9090``) or by the matching ``rofecare serve`` flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
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

    def sqlite_path(self) -> Path:
        """The SQLite database file this configuration points at."""
        if self.store.startswith("sqlite:///"):
            return Path(self.store.removeprefix("sqlite:///"))
        return self.data_dir / "rofecare.sqlite3"
