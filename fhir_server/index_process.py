"""The search index's applier in a process of its own, for ``rofecare serve --workers N``
over SQLite.

Why: a write logs its version for indexing, and the index rows are computed from the
version (FHIRPath over the resource) and inserted by whichever store holds the applier role
(storage/sqlite/write_lock.py, ``ProcessRole``; index_log.py). In a worker, that work shared
the worker's GIL with its event loop and with its writer thread, which waits for the GIL
while it holds the database's write lock, so it lengthened every worker's writes. Here it
has a GIL of its own: with it, and the workers leaving the entries to it (index_log.py,
deferred rows), `benchmarks/search.py`'s indexed creates went from 53-55 % of the rate
without indexing to 63-66 % (docs/benchmarks.md, "What limits it").

Lifecycle: ``serve`` starts it (spawn) before the workers and waits until it holds the role,
so no worker takes it first. It applies the log every ``PERIOD_SECONDS`` until SIGTERM
or until its parent is gone, then closes its store, which applies what is left. Should it
die, the kernel releases the role, and the workers' stores apply their rows as they do
without it (a worker takes the role at its next apply). Ctrl-C at a terminal reaches the
whole process group: it ignores SIGINT, and ``serve`` stops it once the workers ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from fhir_server import event_loop
from fhir_server.config import Settings

log = logging.getLogger("rofecare.index")

# Applied every half second, up to 3,000 resources per transaction: a transaction writes
# each index page it touched once, so fewer and larger ones cost less per resource
# (applying 8,000 logged Patients and AuditEvents: 218 us each in chunks of 200, 133 in
# chunks of 1,000; 14,686 with their rows computed ahead: 126-130 in chunks of 1,000,
# 116-119 in chunks of 3,000). A search does not wait for a round: it applies what its
# types lack, waiting at most for the transaction under way, which holds the index
# file's lock only to insert rows computed before it began (store.py, _compute_ahead):
# ~160 ms of CPU for 3,000, against ~125 ms for 1,000 computed inside.
PERIOD_SECONDS = 0.5
CHUNK = 3_000
START_SECONDS = 60.0  # building the core and opening the store
STOP_SECONDS = 60.0  # applying what is left, then closing


class IndexProcess:
    """The running applier process, as ``serve`` sees it."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process

    @classmethod
    def start(cls) -> IndexProcess | None:
        """Started and holding the role; None (the workers then apply as they would
        alone) when it could not: said on stderr, and serving goes on."""
        context = multiprocessing.get_context("spawn")  # it reads serve's ROFECARE_* variables
        receiving, sending = context.Pipe(duplex=False)
        process = context.Process(
            target=_main, args=(sending, os.getpid()), name="rofecare-index", daemon=True
        )
        process.start()
        sending.close()
        started = cls(process)
        try:
            ready = receiving.poll(START_SECONDS) and receiving.recv() is True
        except (EOFError, OSError):
            ready = False
        finally:
            receiving.close()
        if not ready:
            log.warning("The search index process did not start; the workers index instead")
            started.stop()
            return None
        return started

    def stop(self) -> None:
        """Let it apply what is left and close its store; killed if it takes too long."""
        process = self._process
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


def _main(ready: Connection, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=Settings().log_level.upper(), format="%(levelname)s: %(message)s")
    event_loop.run(_serve(ready, parent))


async def _serve(ready: Connection, parent: int) -> None:
    from fhir_server.core import build_core  # the whole write path's indexing, as a worker's
    from fhir_server.long_lived import collect_seldom, freeze_start_up
    from fhir_server.storage.sqlite.store import SqliteStore

    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    core = build_core(Settings())
    store = core.store
    if not isinstance(store, SqliteStore):
        _say(ready, False)
        return
    await store.open()
    try:
        held = await store.take_applier_role()
        _say(ready, held)
        if not held:
            return
        log.info("Search index process %d applies the index log", os.getpid())
        freeze_start_up()  # the definitions and compiled paths: never collected
        collect_seldom()  # it works in chunks of thousands of resources, as a loader does
        while not stopping.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PERIOD_SECONDS)
            try:
                await store.apply_pending(CHUNK)
            except Exception:  # the rows stay logged: the next round, or a search, applies them
                log.exception("The index log could not be applied now")
    finally:
        await store.close()


def _say(ready: Connection, value: Any) -> None:
    try:
        ready.send(value)
    finally:
        ready.close()
