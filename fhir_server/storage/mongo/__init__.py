"""The MongoDB store (issue 5): several server workers over one replica set."""

from fhir_server.storage.mongo.store import MongoStore

__all__ = ["MongoStore"]
