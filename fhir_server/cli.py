"""The ``rofecare`` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from fhir_server import __version__
from fhir_server.config import Settings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    # Flags become ROFECARE_* variables so that every uvicorn worker process builds the same
    # Settings through the app factory.
    for name in ("host", "port", "data_dir", "workers", "store", "log_level"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"ROFECARE_{name.upper()}"] = str(value)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"Rofecare {__version__}: FHIR R4 at http://{settings.host}:{settings.port}"
        f"{settings.base_path} (store: {settings.sqlite_path()})",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn handles SIGINT/SIGTERM itself (requests in flight finish, the lifespan closes
    # the store), then restores the previous handlers and raises the signal again. With the
    # default handlers that re-raise would kill the process with status 143 after a perfectly
    # clean shutdown; these handlers turn it into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    uvicorn.run(
        "fhir_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def _reindex(args: argparse.Namespace) -> int:
    """Rebuild every resource's search index entries, with a progress bar on stderr."""
    for name in ("data_dir", "store"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"ROFECARE_{name.upper()}"] = str(value)
    settings = Settings()
    if not settings.sqlite_path().exists():
        print(f"No database at {settings.sqlite_path()}", file=sys.stderr)
        return 1
    return asyncio.run(_run_reindex(settings))


async def _run_reindex(settings: Settings) -> int:
    from tqdm import tqdm

    from fhir_server.app import build_core
    from fhir_server.services.reindex import count_current, reindex

    core = build_core(settings)
    await core.store.open()
    try:
        await core.service.reload_search_parameters()
        total = await count_current(core.store)
        with tqdm(total=total, unit="resource", file=sys.stderr, desc="reindex") as bar:
            summary = await reindex(core.store, core.search_index, progress=bar.update)
    finally:
        await core.store.close()
    rate = summary.resources / summary.seconds if summary.seconds else 0.0
    print(
        f"Reindexed {summary.reindexed} of {summary.resources} resources in "
        f"{summary.seconds:.1f} s ({rate:,.0f}/s); the others changed meanwhile and "
        "were indexed by their own write.",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rofecare", description="Rofecare FHIR R4 server")
    parser.add_argument("--version", action="version", version=f"rofecare {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument(
        "--data-dir", dest="data_dir", help="data directory (default ./rofecare-data)"
    )
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--store", help="'sqlite' (default) or sqlite:///path/to/file")
    serve.add_argument(
        "--log-level", dest="log_level", choices=["debug", "info", "warning", "error"]
    )
    serve.set_defaults(handler=_serve)
    rebuild = commands.add_parser(
        "reindex", help="rebuild search index entries (after SearchParameters change)"
    )
    rebuild.add_argument(
        "--data-dir", dest="data_dir", help="data directory (default ./rofecare-data)"
    )
    rebuild.add_argument("--store", help="'sqlite' (default) or sqlite:///path/to/file")
    rebuild.set_defaults(handler=_reindex)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
