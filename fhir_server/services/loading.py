"""Bulk loading (``rofecare load PATH...``): FHIR files and folders into the store, in process.

Nothing here writes on its own: every unit ``load_sources`` reads is a Bundle handed to
``BundleService.process``, the code behind ``POST /fhir``, so validation, indexing,
``urn:uuid`` rewriting and conditional references work exactly as over HTTP
(https://hl7.org/fhir/R4/http.html#transaction). Several units are in flight at once
(``concurrency``): the store's group commit then pays one fsync for several of them.

**Order.** A transaction may reference, by a conditional reference (``Practitioner?
identifier=...``), resources that a later file creates (Synthea writes patients next to the
``hospitalInformation`` and ``practitionerInformation`` files they need). A transaction
that fails only because such a reference matched nothing (``rofecare-2406``), and a batch
entry failing so, is not a failure yet: it waits, and is retried when the folder it was in
has been read (after what is in flight has finished), again at the end of each enclosing
folder, and at the end of the run, in passes until a pass loads nothing more. Retrying at
the end of the folder rather than only at the end of the run matters: data read later
elsewhere can make the reference ambiguous (the self-contained Synthea bundles create the
same hospitals again with plain POSTs), which a retry after them would meet as 2407.

**Resume.** After a unit commits, its content key is recorded in the ledger
(``load_ledger``); a later run skips what the ledger holds, and retries only the entries of
a batch that did not load. Between the store's commit and the ledger's there is a window:
a crash there (power loss, SIGKILL) leaves a unit loaded but unrecorded, and the next run
loads it again. That is harmless for what is idempotent: NDJSON lines and collection
entries with ids are PUT by id (the same content again, as a new version), and conditional
creates (``ifNoneExist``) find what the first run created; only plain POSTs (Synthea's
patient transactions) would be created twice, for the one or few units in that window.
Ctrl-C stops reading new units; what is in flight finishes and is recorded (a second
Ctrl-C cancels it: a transaction not yet committed then rolls back; the store is closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Protocol

from fhir_server.errors import FhirError
from fhir_server.search.plan import SearchPlan
from fhir_server.services.bundles import BundleOutcome, EntryOutcome
from fhir_server.services.load_ledger import Ledger
from fhir_server.services.load_report import (
    ENTRY_PATH,
    Report,
    failure_record,
    outcome_fields,
    warning_record,
)
from fhir_server.services.load_sources import Fault, FolderEnd, Ignored, Item, Unit, Walk
from fhir_server.services.resources import ACCEPTED_BREAKS_LOGGER
from fhir_server.storage.base import ResourceStore

WAITS_FOR_DATA = "rofecare-2406"  # a conditional reference that matched nothing


@dataclass
class LoadSummary:
    """Counts of one run, in resources (Bundle entries, NDJSON lines) unless named otherwise.

    ``unchanged``: a conditional create that found its resource, or a read entry;
    ``skipped``: already loaded by an earlier run (the ledger) or earlier in this run;
    ``failed``: not loaded (every entry of a failed transaction; an unreadable file as 1)."""

    files: int = 0
    bundles: int = 0  # units: Bundle files, and batches of NDJSON lines or collection entries
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    failures: int = 0  # failure lines in the report
    warned: int = 0  # loaded with warnings: a line each in the report
    warning_keys: Counter[str] = field(default_factory=Counter)  # resources per rule key
    ignored_files: int = 0  # JSON that is no FHIR resource, met in a folder
    retried_bundles: int = 0  # waited for data loaded after them at least once
    waiting: int = 0  # still waiting when the run was interrupted
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def loaded(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def rate(self) -> float:
        return self.loaded / self.seconds if self.seconds else 0.0


def quiet_accepted_breaks() -> Callable[[], None]:
    """The server logs each write it accepts in warn mode although it breaks a hospital
    rule. While loading, the report lists them with their files and entries; a log line
    each (4,344 for Synthea) would bury the progress bar and the summary. Returns what
    puts the log back (``rofecare load`` may run inside a longer process: the tests)."""
    logger = logging.getLogger(ACCEPTED_BREAKS_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    return lambda: logger.setLevel(level)


class RunsBundles(Protocol):
    """``BundleService``, in this process, or ``load_workers.WorkerPool``, which runs the
    same code in worker processes (``rofecare load --jobs``)."""

    async def process(self, bundle: Any, *, base_url: str) -> BundleOutcome: ...


@dataclass(frozen=True)
class Work:
    unit: Unit
    selection: tuple[int, ...] | None  # the entries to run (None: the whole unit)
    retry: bool = False


@dataclass
class Waiting:
    """A unit, or some entries of a batch, waiting for resources loaded after it."""

    source: str
    number: int
    key: str
    selection: tuple[int, ...] | None
    resources: int
    records: list[dict[str, Any]] = field(default_factory=list)  # if they never load


class Loader:
    def __init__(
        self,
        bundles: RunsBundles,
        ledger: Ledger,
        report: Report,
        walk: Walk,
        *,
        base_url: str,
        concurrency: int = 4,
        progress: Callable[[int], None] = lambda done: None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._bundles = bundles
        self._ledger = ledger
        self._report = report
        self._walk = walk
        self._base_url = base_url
        self._progress = progress
        self._stop = stop or asyncio.Event()
        self._gate = asyncio.Semaphore(max(1, concurrency))
        self._tasks: dict[asyncio.Task[None], str] = {}  # in flight -> its source
        self._claimed: set[str] = set()
        self._sources: set[str] = set()
        self._waiting: list[Waiting] = []
        self.summary = LoadSummary()

    async def run(self, paths: Sequence[Path]) -> LoadSummary:
        started = time.perf_counter()
        try:
            async for item in _read(self._walk.items(paths)):
                if self._stop.is_set():
                    break
                await self._take(item)
            await self._drain()
            await self._retry(None)
        except asyncio.CancelledError:  # aborted: what is in flight is cancelled too
            self._stop.set()
            for task in self._tasks:
                task.cancel()
        finally:
            await self._drain()
            self.summary.interrupted = self._stop.is_set()
            self._give_up()
            self.summary.files = len(self._sources)
            self.summary.seconds = time.perf_counter() - started
        return self.summary

    async def _take(self, item: Item) -> None:
        if isinstance(item, FolderEnd):
            await self._retry(item.folder)
        elif isinstance(item, Ignored):
            self.summary.ignored_files += 1
        elif isinstance(item, Fault):
            self._sources.add(item.source)
            record: dict[str, Any] = {"file": item.source}
            if item.line is not None:
                record["line"] = item.line
            self._fail(1, {**record, **outcome_fields(item.error)})
            self._progress(1)
        else:
            self._sources.add(item.source)
            self.summary.bundles += 1
            if item.key in self._claimed:  # the same content twice in one run
                self.summary.skipped += len(item.positions)
                self._progress(len(item.positions))
                return
            self._claimed.add(item.key)
            await self._submit(Work(item, None))

    # -- in flight -------------------------------------------------------------------------

    async def _submit(self, work: Work) -> None:
        await self._gate.acquire()
        task = asyncio.create_task(self._guarded(work))
        self._tasks[task] = work.unit.source
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._gate.release()

    async def _drain(self, folder: str | None = None) -> None:
        """Wait for what is in flight (from under ``folder`` only, when it is given)."""
        while tasks := [t for t, source in self._tasks.items() if _inside(source, folder)]:
            await asyncio.wait(tasks)

    async def _guarded(self, work: Work) -> None:
        try:
            await self._process(work)
        except Exception as error:  # a fault of ours or of the store: report it, go on
            unit = work.unit
            count = len(work.selection or unit.positions)
            diagnostics = f"Internal error ({type(error).__name__}): {str(error)[:300]}"
            record = {
                "file": unit.source,
                "status": 500,
                "code": "rofecare-1500",
                "issue": "exception",
                "diagnostics": diagnostics,
            }
            self._fail(count, record)
            self._progress(count)

    async def _process(self, work: Work) -> None:
        unit, selection = work.unit, work.selection
        if not work.retry:
            row = await self._ledger.get(unit.key)
            if row is not None:
                done = row.resources - len(row.pending)
                self.summary.skipped += done
                self._progress(done)
                if row.complete:
                    return
                selection = row.pending
        indices = selection if selection is not None else tuple(range(len(unit.positions)))
        try:
            outcome = await self._bundles.process(unit.select(selection), base_url=self._base_url)
        except FhirError as error:  # the Bundle as a whole: nothing of it was written
            self._unit_failed(work, indices, error)
            return
        await self._entries_done(work, indices, outcome)

    def _unit_failed(self, work: Work, indices: tuple[int, ...], error: FhirError) -> None:
        unit = work.unit
        found = ENTRY_PATH.search(" ".join(error.issues[0].expression) or error.diagnostics)
        entry = int(found.group(1)) if found and int(found.group(1)) < len(indices) else None
        record = failure_record(unit, indices, entry, error)
        if error.rofecare_code == WAITS_FOR_DATA:
            self._wait(work, None, len(indices), [record])
            return
        self._fail(len(indices), record)
        self._progress(len(indices))

    async def _entries_done(
        self, work: Work, indices: tuple[int, ...], outcome: BundleOutcome
    ) -> None:
        unit = work.unit
        loaded: set[int] = set()
        waiting: list[int] = []
        records: list[dict[str, Any]] = []
        for position, (index, result) in enumerate(zip(indices, outcome.entries, strict=True)):
            if result.error is None:
                self._count(result)
                loaded.add(index)
                if result.write is not None and result.write.warnings:
                    self._warned(unit, indices, position, result)
            elif result.error.rofecare_code == WAITS_FOR_DATA:
                waiting.append(index)
                records.append(failure_record(unit, indices, position, result.error))
            else:
                self._fail(1, failure_record(unit, indices, position, result.error))
        row = await self._ledger.get(unit.key) if outcome.kind == "batch" else None
        before = row.pending if row is not None else range(len(unit.positions))
        pending = [index for index in before if index not in loaded]
        await self._ledger.record(unit.key, unit.source, unit.number, len(unit.positions), pending)
        if waiting:
            selection = tuple(waiting) if outcome.kind == "batch" else None
            self._wait(work, selection, len(waiting), records)
        self._progress(len(indices) - len(waiting))

    def _warned(
        self, unit: Unit, indices: tuple[int, ...], position: int, result: EntryOutcome
    ) -> None:
        assert result.write is not None
        record = warning_record(unit, indices, position, result.status, result.write.warnings)
        self.summary.warned += 1
        self.summary.warning_keys.update(record["keys"])
        self._report.write(record)

    def _count(self, result: EntryOutcome) -> None:
        write = result.write
        if write is None or not write.changed:
            self.summary.unchanged += 1
        elif write.created:
            self.summary.created += 1
        else:
            self.summary.updated += 1

    # -- waiting for data loaded later -----------------------------------------------------

    def _wait(
        self, work: Work, selection: tuple[int, ...] | None, count: int, records: list[Any]
    ) -> None:
        unit = work.unit
        if not work.retry:
            self.summary.retried_bundles += 1
        self._waiting.append(Waiting(unit.source, unit.number, unit.key, selection, count, records))

    async def _retry(self, folder: str | None) -> None:
        """Retry what waits under ``folder`` (None: everything) until a pass loads nothing."""
        await self._drain(folder)  # a bundle in flight may be about to wait
        chosen = self._under(folder)
        while chosen and not self._stop.is_set():
            taken = {id(waiting) for waiting in chosen}
            self._waiting = [waiting for waiting in self._waiting if id(waiting) not in taken]
            before = self.summary.loaded
            for waiting in chosen:
                await self._submit_again(waiting)
            await self._drain(folder)
            if self.summary.loaded == before:
                return
            chosen = self._under(folder)

    async def _submit_again(self, waiting: Waiting) -> None:
        read = await asyncio.to_thread(self._walk.unit, waiting.source, waiting.number)
        if isinstance(read, Fault) or read.key != waiting.key:
            error = read.error if isinstance(read, Fault) else None
            changed = {
                "status": 409,
                "code": "rofecare-2605",
                "issue": "conflict",
                "diagnostics": "The file changed while it was being loaded",
            }
            record = {"file": waiting.source, **(outcome_fields(error) if error else changed)}
            self._fail(waiting.resources, record)
            self._progress(waiting.resources)
            return
        await self._submit(Work(read, waiting.selection, retry=True))

    def _under(self, folder: str | None) -> list[Waiting]:
        return [waiting for waiting in self._waiting if _inside(waiting.source, folder)]

    def _give_up(self) -> None:
        """What still waits at the end never found its reference: a failure, as reported
        by its last attempt (unless the run was interrupted before it could retry)."""
        for waiting in self._waiting:
            if self._stop.is_set():
                self.summary.waiting += waiting.resources
                continue
            self._fail(waiting.resources, *waiting.records)
            self._progress(waiting.resources)
        self._waiting = []

    def _fail(self, resources: int, *records: dict[str, Any]) -> None:
        self.summary.failed += resources
        self.summary.failures += len(records)
        for record in records:
            self._report.write(record)


async def load(
    bundles: RunsBundles,
    store: ResourceStore,
    walk: Walk,
    paths: Sequence[Path],
    *,
    ledger: Ledger,
    report: Report,
    base_url: str,
    concurrency: int = 4,
    restart: bool = False,
    progress: Callable[[int], None] = lambda done: None,
    notice: Callable[[str], None] = lambda text: None,
    stop: asyncio.Event | None = None,
) -> LoadSummary:
    """Load ``paths`` through ``bundles``; the caller opens and closes the store."""
    await ledger.open()
    try:
        if restart:
            forgotten = await ledger.forget()
            notice(f"--restart: ignoring {forgotten} ledger rows of earlier loads")
        elif await ledger.rows() and not await _holds_anything(store):
            forgotten = await ledger.forget()
            notice(f"The store is empty: ignoring {forgotten} ledger rows of an earlier load")
        loader = Loader(
            bundles,
            ledger,
            report,
            walk,
            base_url=base_url,
            concurrency=concurrency,
            progress=progress,
            stop=stop,
        )
        return await loader.run(paths)
    finally:
        await ledger.close()


async def _holds_anything(store: ResourceStore) -> bool:
    """A ledger for an empty store is stale (the database was deleted or replaced): trusting
    it would skip everything and load nothing."""
    page = await store.search(SearchPlan((), (), count=1, total="none"))
    return bool(page.matches)


async def _read(items: Iterator[Item]) -> AsyncIterator[Item]:
    """The walk, each step on a thread: reading and hashing a file overlaps the writes."""
    while True:
        item = await asyncio.to_thread(next, items, None)
        if item is None:
            return
        yield item


def _inside(source: str, folder: str | None) -> bool:
    return folder is None or PurePath(source).is_relative_to(folder)
