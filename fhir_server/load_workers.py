"""Worker processes for ``rofecare load --jobs N``: the Bundles of a load, run on N cores
(the loader's own process and N - 1 workers).

Why: a loader process runs at ~100 % of one core. Validation, FHIRPath indexing and the
Bundle work are Python, and the GIL runs them one at a time however many Bundles are in
flight (docs/benchmarks.md, "Bundles and bulk loading"). Each worker here builds the whole
core, the same write path as ``POST /fhir``, on the same store, and runs the Bundles it is
sent. SQLite's write lock (storage/sqlite/write_lock.py) queues the workers' commits as it
queues those of ``rofecare serve --workers``; MongoDB takes concurrent writers as it is.

What stays in the calling process (services/loading.py): the order of the files, the
retries of Bundles that wait for data, the ledger and the report. A worker only runs
Bundles and says what each did. It gets a Bundle as JSON bytes and sends back a
``BundleOutcome`` without the stored bodies, which the loader never reads.

Lifecycle: the workers are started with ``spawn`` (the calling process has threads, which
``fork`` would copy half-way). They ignore SIGINT, so a Ctrl-C at the terminal reaches
only the loader, and the loader decides: ``close`` lets the Bundles in flight finish and
closes every worker's store, ``abort`` kills the workers, so that their transactions not
yet committed roll back. A worker that dies fails its Bundles in flight, and the loader
reports them as it reports any internal error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server import event_loop
from fhir_server.config import Settings
from fhir_server.errors import FhirError

if TYPE_CHECKING:  # imported where used: the loader starts its workers before it needs them
    from fhir_server.services.bundles import BundleOutcome, BundleService, EntryOutcome

START_SECONDS = 120.0  # building the core and opening the store; the first run compiles
STOP_SECONDS = 120.0  # the Bundles in flight finish and each store closes


class WorkerFailed(RuntimeError):
    """A worker could not start, died, or failed outside the FHIR rules (an internal error)."""


@dataclass(frozen=True)
class _Job:
    number: int
    bundle: bytes  # JSON
    base_url: str


@dataclass(frozen=True)
class _Reply:
    number: int
    outcome: BundleOutcome | None
    error: FhirError | WorkerFailed | None


class WorkerPool:
    """``processes`` worker processes on the store ``settings`` names, and, with ``local``,
    this process too; ``process`` has the signature of ``BundleService.process``, so the
    loader runs through either. Each Bundle goes to the lane with the fewest in flight.

    Why this process takes a share (``rofecare load --jobs N`` starts N - 1 workers): it
    has built its core already, its share costs no copy of the Bundle, and a process
    fewer to start is a second of CPU fewer on a machine whose cores it wants busy."""

    def __init__(
        self, settings: Settings, processes: int, local: BundleService | None = None
    ) -> None:
        self._settings = settings
        self._processes = processes
        self._local = local
        self._local_in_flight = 0
        self._workers: list[_Worker] = []

    def share(self, local: BundleService) -> None:
        """Have this process run a share of the Bundles too, through ``local`` (given once
        its core is built, which the workers' start need not wait for)."""
        self._local = local

    def launch(self) -> None:
        """Start the processes, without waiting for them to be ready (``start``)."""
        if self._workers or self._processes < 1:
            return
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        self._workers = [_Worker(number, context, loop) for number in range(self._processes)]
        for worker in self._workers:
            worker.start(self._settings)

    async def start(self) -> None:
        """Launch the workers if not yet, and wait until each has opened the store."""
        self.launch()
        try:
            await asyncio.gather(*(worker.ready() for worker in self._workers))
        except BaseException:
            self.abort()
            raise

    async def process(self, bundle: Any, *, base_url: str) -> BundleOutcome:
        alive = [worker for worker in self._workers if worker.alive]
        worker = min(alive, key=lambda candidate: candidate.in_flight, default=None)
        local = self._local
        if local is not None and (worker is None or self._local_in_flight <= worker.in_flight):
            self._local_in_flight += 1
            try:
                return await local.process(bundle, base_url=base_url)
            finally:
                self._local_in_flight -= 1
        if worker is None:
            raise WorkerFailed("every loader worker has stopped")
        return await worker.run(orjson.dumps(bundle), base_url)

    async def close(self) -> None:
        """Let every worker finish what it runs and close its store, then wait for it."""
        await asyncio.gather(*(worker.stop() for worker in self._workers))

    def abort(self) -> None:
        for worker in self._workers:
            worker.kill()


class _Worker:
    """The calling process's side of one worker: two one-way pipes, and a thread that
    reads the replies and settles the futures on the event loop."""

    def __init__(self, number: int, context: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.number = number
        self._context = context
        self._loop = loop
        self._jobs_out: Connection | None = None
        self._replies_in: Connection | None = None
        self._process: Any = None
        self._waiting: dict[int, asyncio.Future[BundleOutcome]] = {}
        self._next = 0
        self._started: asyncio.Future[None] = loop.create_future()
        self._ended = asyncio.Event()

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def start(self, settings: Settings) -> None:
        jobs_in, self._jobs_out = self._context.Pipe(duplex=False)
        self._replies_in, replies_out = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=_worker_main,
            args=(settings, jobs_in, replies_out),
            name=f"rofecare-load-{self.number}",
            daemon=True,  # never outlives the loader
        )
        self._process.start()
        jobs_in.close()  # the child's ends: EOF reaches each side when the other goes
        replies_out.close()
        threading.Thread(target=self._read_replies, name=self._process.name, daemon=True).start()

    async def ready(self) -> None:
        await asyncio.wait_for(asyncio.shield(self._started), START_SECONDS)

    async def run(self, bundle: bytes, base_url: str) -> BundleOutcome:
        if not self.alive or self._jobs_out is None:
            raise WorkerFailed(f"loader worker {self.number} has stopped")
        number, self._next = self._next, self._next + 1
        done: asyncio.Future[BundleOutcome] = self._loop.create_future()
        self._waiting[number] = done
        try:
            self._jobs_out.send(_Job(number, bundle, base_url))
        except OSError as error:
            self._waiting.pop(number, None)
            raise WorkerFailed(f"loader worker {self.number} has stopped ({error})") from error
        return await done

    async def stop(self) -> None:
        if self._jobs_out is not None and self.alive:
            with contextlib.suppress(OSError):
                self._jobs_out.send(None)
        try:
            await asyncio.wait_for(self._ended.wait(), STOP_SECONDS)
        except TimeoutError:
            self.kill()
        await asyncio.to_thread(self._process.join, STOP_SECONDS)
        if self._jobs_out is not None:
            self._jobs_out.close()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    # -- the reply thread --------------------------------------------------------------------

    def _read_replies(self) -> None:
        assert self._replies_in is not None
        try:
            while True:
                try:
                    message = self._replies_in.recv()
                except (EOFError, OSError):
                    return
                self._loop.call_soon_threadsafe(self._settle, message)
        finally:
            self._replies_in.close()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._lost)

    def _settle(self, message: _Reply | WorkerFailed | None) -> None:
        if message is None:  # started
            if not self._started.done():
                self._started.set_result(None)
            return
        if isinstance(message, WorkerFailed):  # could not start
            if not self._started.done():
                self._started.set_exception(message)
            return
        done = self._waiting.pop(message.number, None)
        if done is None or done.done():  # its loader task was cancelled
            return
        if message.error is not None:
            done.set_exception(message.error)
        elif message.outcome is not None:
            done.set_result(message.outcome)

    def _lost(self) -> None:
        """The worker's pipe closed: it exited, by ``stop`` or otherwise."""
        self._ended.set()
        code = self._process.exitcode if self._process is not None else None
        failure = WorkerFailed(f"loader worker {self.number} exited (code {code})")
        if not self._started.done():
            self._started.set_exception(failure)
        waiting, self._waiting = self._waiting, {}
        for done in waiting.values():
            if not done.done():
                done.set_exception(failure)


# -- the worker process ----------------------------------------------------------------------


def _worker_main(settings: Settings, jobs: Connection, replies: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the loader decides when to stop
    from fhir_server.services.loading import quiet_accepted_breaks

    quiet_accepted_breaks()
    event_loop.run(_serve(settings, jobs, replies))
    # The store is closed and the replies sent: exit without the interpreter's teardown of
    # every object the Bundles left (~0.3 s at the end of a Synthea load, which the loader
    # waits for).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _serve(settings: Settings, jobs: Connection, replies: Connection) -> None:
    from fhir_server.core import build_core  # the worker's own core, without the HTTP stack
    from fhir_server.long_lived import collect_seldom, freeze_start_up

    try:
        core = build_core(settings, index_later=False)  # as the loader's own (core.py)
        await core.store.open()
    except Exception as error:
        replies.send(WorkerFailed(f"loader worker {os.getpid()}: {type(error).__name__}: {error}"))
        return
    running: set[asyncio.Task[None]] = set()
    try:
        try:
            await core.service.reload_search_parameters()
        except Exception as error:
            replies.send(WorkerFailed(f"loader worker {os.getpid()}: {error}"))
            return
        freeze_start_up()
        collect_seldom()
        replies.send(None)
        while (job := await asyncio.to_thread(_receive, jobs)) is not None:
            task = asyncio.create_task(_run(core.bundles, job, replies))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running)
    finally:
        await core.store.close()
        replies.close()


def _receive(jobs: Connection) -> _Job | None:
    """The next job; None once the loader says stop, or is gone."""
    try:
        job: _Job | None = jobs.recv()
    except (EOFError, OSError):
        return None
    return job


async def _run(bundles: BundleService, job: _Job, replies: Connection) -> None:
    reply: _Reply
    try:
        outcome = await bundles.process(orjson.loads(job.bundle), base_url=job.base_url)
        reply = _Reply(job.number, _without_bodies(outcome), None)
    except FhirError as error:  # the Bundle as a whole: nothing of it was written
        reply = _Reply(job.number, None, error)
    except Exception as error:  # a fault of ours or of the store: the loader reports it
        reply = _Reply(job.number, None, WorkerFailed(f"{type(error).__name__}: {error}"))
    try:
        replies.send(reply)
    except (TypeError, AttributeError, ValueError) as error:  # pickle refused something
        replies.send(_Reply(job.number, None, WorkerFailed(f"unsendable outcome: {error}")))


def _without_bodies(outcome: BundleOutcome) -> BundleOutcome:
    """What the loader reads of an outcome: each entry's status, error, warnings, and
    whether it created or changed a resource (the stored bodies would cost a copy each way)."""
    from fhir_server.services.bundles import BundleOutcome

    return BundleOutcome(outcome.kind, [_slim(entry) for entry in outcome.entries])


def _slim(entry: EntryOutcome) -> EntryOutcome:
    from fhir_server.services.bundles import EntryOutcome

    write = entry.write
    if write is not None:
        write = replace(write, version=replace(write.version, body=None))
    return EntryOutcome(entry.status, write=write, error=entry.error)
