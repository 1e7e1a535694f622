"""A bare FastAPI + SQLite read, the yardstick for Rofecare's read figure.

Why: "5,000 reads/s" means little on its own; on the same machine, the same uvicorn settings
and the same wrk scenario, this app shows what the stack (uvicorn, FastAPI, stdlib sqlite3)
costs with nothing of Rofecare on top. The gap between the two is what Rofecare adds.

It does the least a FHIR read can do: one GET route, one primary-key lookup in a SQLite file
(WAL, one connection per thread, the route is a plain ``def`` so FastAPI runs it in its
thread pool, as blocking I/O should be) and the stored JSON bytes sent back unchanged.
``benchmarks/rest.py --baseline`` fills the file with the same Patients it seeded into
Rofecare and starts this module as ``python benchmarks/baseline_app.py --port P --db FILE``.

``--inline`` makes the route ``async def`` and runs the lookup on the event loop thread
itself, with no hop to a worker thread. It is not a recommendation (a slow query would stall
every request); it measures what that hop costs, which Rofecare's store pays on every call.
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

SCHEMA = "CREATE TABLE IF NOT EXISTS patient (id TEXT PRIMARY KEY, body BLOB NOT NULL)"


def build_app(db_path: Path, *, inline: bool = False) -> FastAPI:
    local = threading.local()

    def connection() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "connection", None)
        if conn is None:
            conn = sqlite3.connect(db_path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            local.connection = conn
        return conn

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ready")
    async def ready() -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    def lookup(resource_id: str) -> Response:
        row = (
            connection().execute("SELECT body FROM patient WHERE id = ?", (resource_id,)).fetchone()
        )
        if row is None:
            return Response(b'{"resourceType":"OperationOutcome"}', 404)
        return Response(row[0], media_type="application/fhir+json")

    if inline:

        @app.get("/fhir/Patient/{resource_id}")
        async def read_inline(resource_id: str) -> Response:
            return lookup(resource_id)  # blocks the event loop for the query's duration

    else:

        @app.get("/fhir/Patient/{resource_id}")
        def read(resource_id: str) -> Response:
            return lookup(resource_id)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True, help="SQLite file with a patient table")
    parser.add_argument(
        "--inline", action="store_true", help="query on the event loop, not in a worker thread"
    )
    args = parser.parse_args()
    with sqlite3.connect(args.db) as conn:
        conn.execute(SCHEMA)
    # The settings `rofecare serve` passes to uvicorn (fhir_server/cli.py), so that only the
    # application differs.
    uvicorn.run(
        build_app(args.db, inline=args.inline),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="info",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
