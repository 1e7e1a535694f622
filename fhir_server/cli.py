"""The ``rofecare`` command.

What only some commands need (uvicorn, the identity stack, the stores) is imported by them:
a ``rofecare load`` worker, started with ``spawn``, imports this module again, and the
identity stack and uvicorn cost it ~0.3 s before it could take a Bundle."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fhir_server import __version__, event_loop
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.storage.base import ResourceStore

if TYPE_CHECKING:
    from fhir_server.services.loading import LoadSummary


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
    import uvicorn

    from fhir_server.app import check_security
    from fhir_server.cli_identity import bootstrap

    try:
        check_security(settings)
    except ValueError as refused:
        print(f"rofecare: {refused}", file=sys.stderr)
        return 2
    bootstrap(settings)
    if not settings.auth_enabled:
        print(
            "WARNING: authentication is off (ROFECARE_AUTH_ENABLED=false): anybody who can "
            "reach this port reads and writes everything. Development and benchmarks only.",
            file=sys.stderr,
        )
    print(
        f"Rofecare {__version__}: FHIR R4 at http://{settings.host}:{settings.port}"
        f"{settings.base_path} (store: {settings.store_description()})",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn handles SIGINT/SIGTERM itself (requests in flight finish, the lifespan closes
    # the store), then restores the previous handlers and raises the signal again. With the
    # default handlers that re-raise would kill the process with status 143 after a perfectly
    # clean shutdown; these handlers turn it into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    indexing = None
    if settings.workers > 1 and settings.search_indexing and not settings.uses_mongodb():
        from fhir_server.index_process import IndexProcess

        indexing = IndexProcess.start()  # before the workers: none of them takes its role
    try:
        uvicorn.run(
            "fhir_server.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            # Workers share the listening socket: a busy one lets an idle one accept.
            loop="fhir_server.fair_accept:new_event_loop" if settings.workers > 1 else "auto",
            log_level=settings.log_level,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if indexing is not None:
            indexing.stop()
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
    return event_loop.run(_run_reindex(settings))


async def _run_reindex(settings: Settings) -> int:
    from tqdm import tqdm

    from fhir_server.core import build_core
    from fhir_server.services.reindex import count_current, reindex

    core = build_core(settings)
    if not await _opened(core.store, settings.store_description()):
        return 1
    try:
        await core.service.reload_search_parameters()
        total = await count_current(core.store)
        with tqdm(total=total, unit="resource", file=sys.stderr, desc="reindex") as bar:
            summary = await reindex(
                core.store, core.search_index, progress=bar.update, claims=core.service.rules.claims
            )
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


def _load(args: argparse.Namespace) -> int:
    """Load FHIR files and folders into the store through the transaction/batch path."""
    # One process: flags override the ROFECARE_* variables directly (no workers to tell).
    flags = {name: getattr(args, name) for name in ("data_dir", "store")}
    settings = Settings(**{name: value for name, value in flags.items() if value is not None})
    return event_loop.run(_run_load(settings, args))


async def _run_load(settings: Settings, args: argparse.Namespace) -> int:
    from fhir_server.load_workers import WorkerFailed, WorkerPool

    # The workers boot while this process imports and builds its own core (about a second
    # each, on two cores) and counts the files; then this process runs a share too.
    starting = WorkerPool(settings, args.jobs - 1) if args.jobs > 1 else None
    if starting is not None:
        starting.launch()
    try:
        from tqdm import tqdm

        from fhir_server.core import build_core
        from fhir_server.long_lived import collect_seldom, freeze_start_up
        from fhir_server.services.load_ledger import Ledger
        from fhir_server.services.load_report import Report
        from fhir_server.services.load_sources import Walk
        from fhir_server.services.loading import load, quiet_accepted_breaks

        paths = [Path(path) for path in args.paths]
        data_dir = settings.data_dir
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report = Report(
            Path(args.report) if args.report else data_dir / f"load-report-{stamp}.ndjson"
        )
        # The data directory holds the reports (NDJSON): never load them back, unless asked to.
        inside = any(data_dir.resolve() in (p.resolve(), *p.resolve().parents) for p in paths)
        walk = Walk(settings.max_bundle_bytes, exclude=() if inside else (data_dir,))
        # The ledger remembers what was loaded into which store: a file, or a MongoDB database.
        store_identity = settings.store_description()
        if not settings.uses_mongodb():
            store_identity = str(settings.sqlite_path().resolve())
        base_url = settings.public_base_url or (
            f"http://{settings.host}:{settings.port}{settings.base_path}"
        )
        core = build_core(settings, index_later=False)
    except BaseException:
        if starting is not None:
            starting.abort()
        raise
    if starting is not None:
        starting.share(core.bundles)
    pool: WorkerPool | None = None
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None

    def interrupt() -> None:
        if stop.is_set():
            print("\nAborting: cancelling the bundles in flight", file=sys.stderr)
            if pool is not None:  # their uncommitted transactions roll back
                pool.abort()
            main_task.cancel()
            return
        stop.set()
        print(
            "\nStopping: the bundles in flight finish and are recorded (Ctrl-C again aborts)",
            file=sys.stderr,
        )

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    opened = False
    try:
        opened = await _opened(core.store, store_identity)
    finally:
        if starting is not None and not opened:  # the workers are of no use
            starting.abort()
    if not opened:
        return 1
    log_accepted_breaks = quiet_accepted_breaks()
    try:
        await core.service.reload_search_parameters()
        freeze_start_up()
        collect_seldom()
        # The progress bar's total is counted (Synthea's 42 MB parsed: ~0.4 s) while the
        # workers start and then while loading begins, not before it.
        counting = asyncio.ensure_future(asyncio.to_thread(walk.count, paths))
        try:
            if starting is not None:
                await starting.start()
                pool = starting
        except asyncio.CancelledError:
            print("Aborted before loading anything", file=sys.stderr)
            return 130
        except WorkerFailed as error:
            print(f"Could not start the loader workers: {error}", file=sys.stderr)
            return 1
        with tqdm(total=None, unit="resource", file=sys.stderr, desc="load") as bar:
            counting.add_done_callback(lambda counted: _set_total(bar, counted))
            summary = await load(
                pool or core.bundles,
                core.store,
                walk,
                paths,
                ledger=Ledger(data_dir / "load-ledger.sqlite3", store_identity),
                report=report,
                base_url=base_url,
                concurrency=args.concurrency,
                restart=args.restart,
                progress=bar.update,
                notice=lambda text: bar.write(text, file=sys.stderr),
                stop=stop,
            )
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        report.close()
        if pool is not None:
            await pool.close()
        elif starting is not None:  # stopped before loading: never used
            starting.abort()
        await core.store.close()
        log_accepted_breaks()
    main_task.uncancel()
    print(
        f"Loaded {summary.files:,} files ({summary.bundles:,} bundles) in "
        f"{summary.seconds:.1f} s: {summary.loaded:,} resources, {summary.rate:,.0f} resources/s"
        f"\n  created {summary.created:,}, updated {summary.updated:,}, "
        f"unchanged {summary.unchanged:,}, skipped {summary.skipped:,} (loaded before), "
        f"failed {summary.failed:,}",
        file=sys.stderr,
    )
    if summary.retried_bundles:
        print(
            f"  {summary.retried_bundles:,} bundles waited for resources loaded after them",
            file=sys.stderr,
        )
    if summary.ignored_files:
        print(f"  {summary.ignored_files:,} JSON files are no FHIR data: ignored", file=sys.stderr)
    if summary.warned:
        print(
            f"  loaded with warnings: {summary.warned:,} resources ({_most_broken(summary)})",
            file=sys.stderr,
        )
    lines = f"{summary.failures:,} failures, {summary.warned:,} warnings"
    print(f"  report: {report.path} ({lines})", file=sys.stderr)
    if summary.interrupted:
        waiting = f"; {summary.waiting:,} resources were still waiting" if summary.waiting else ""
        print(f"Interrupted: run the same command again to resume{waiting}", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


def _most_broken(summary: LoadSummary, shown: int = 5) -> str:
    """The rules broken most often, e.g. ``rof-lr-1 1,520, rofecare-1906 1,431, 3 more``."""
    common = summary.warning_keys.most_common()
    text = ", ".join(f"{key} {count:,}" for key, count in common[:shown])
    return text + (f", {len(common) - shown} more" if len(common) > shown else "")


def _set_total(bar: Any, counted: asyncio.Future[int]) -> None:
    """The progress bar's total, once the files are counted (none if counting failed: the
    load reports each unreadable file itself)."""
    if counted.cancelled() or counted.exception() is not None or bar.disable:  # closed
        return
    bar.total = counted.result()
    bar.refresh()


async def _opened(store: ResourceStore, description: str) -> bool:
    """Open ``store``, or say why it cannot be opened: a damaged or foreign file, a schema
    of another Rofecare, an unreachable server, a directory it may not write to. A command
    line tool answers these in one line, not with a traceback."""
    from fhir_server.storage.sqlite.store import SchemaMismatch

    try:
        await store.open()
    except (sqlite3.DatabaseError, SchemaMismatch, FhirError, OSError) as error:
        print(f"Cannot open the store {description}: {error}", file=sys.stderr)
        return False
    return True


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


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
    serve.add_argument(
        "--store",
        help="'sqlite' (default), sqlite:///path/to/file, or mongodb://host/db?replicaSet=rs0",
    )
    serve.add_argument(
        "--log-level", dest="log_level", choices=["debug", "info", "warning", "error"]
    )
    serve.set_defaults(handler=_serve)
    rebuild = commands.add_parser(
        "reindex",
        help="rebuild search index entries and claims (after SearchParameters change, or an "
        "upgrade that asks for it)",
    )
    rebuild.add_argument(
        "--data-dir", dest="data_dir", help="data directory (default ./rofecare-data)"
    )
    rebuild.add_argument(
        "--store",
        help="'sqlite' (default), sqlite:///path/to/file, or mongodb://host/db?replicaSet=rs0",
    )
    rebuild.set_defaults(handler=_reindex)
    loader = commands.add_parser(
        "load",
        help="load FHIR JSON/NDJSON files and folders into the store (resumable)",
        description="Bundles (transaction, batch, collection, searchset), single resources "
        "and NDJSON (.ndjson, .ndjson.gz, .json.gz) go through the same code as POST /fhir; "
        "resources with an id are PUT by id. Failures go to the report (NDJSON); re-running "
        "skips what is already loaded. Exit status 0 when nothing failed, else 1.",
    )
    loader.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    loader.add_argument(
        "--data-dir", dest="data_dir", help="data directory (default ./rofecare-data)"
    )
    loader.add_argument(
        "--store",
        help="'sqlite' (default), sqlite:///path/to/file, or mongodb://host/db?replicaSet=rs0",
    )
    loader.add_argument(
        "--report", help="failures, one JSON per line (default DATA_DIR/load-report-TIME.ndjson)"
    )
    loader.add_argument(
        "--concurrency", type=_positive, default=4, help="bundles in flight at once (default 4)"
    )
    loader.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        help="processes that run the bundles: this one and JOBS - 1 workers (default 1); "
        "one per core makes a large load faster",
    )
    loader.add_argument(
        "--restart", action="store_true", help="ignore the resume ledger: load everything again"
    )
    loader.set_defaults(handler=_load)
    from fhir_server.cli_identity import add_commands  # here: a loader worker builds no parser

    add_commands(commands, _store_flags)
    return parser


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", dest="data_dir", help="data directory (default ./rofecare-data)"
    )
    parser.add_argument(
        "--store",
        help="'sqlite' (default), sqlite:///path/to/file, or mongodb://host/db?replicaSet=rs0",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
