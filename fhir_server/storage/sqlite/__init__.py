"""The embedded SQLite backend: one file, WAL, durable commits."""

from fhir_server.storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
