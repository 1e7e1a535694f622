"""Bulk loading and transaction Bundles over HTTP: ``python benchmarks/bundles.py``.

Why: issue 4 wants >= 2,000 resources/s with full validation and indexing when a hospital
loads its data, and there are two ways to do it: ``rofecare load`` in process, and partner
systems POSTing Bundles to a running server. This script loads all of
``../shared/data/synthea`` both ways, each into a fresh store with the server's defaults
(SQLite ``synchronous=FULL``, validation, search indexing):

1. ``rofecare load SOURCE --data-dir FRESH --concurrency C`` as a subprocess: resources/s
   from the resources its summary counts and the wall time; any failure fails the run;
2. ``rofecare serve --workers W`` on a fresh data directory, then every Bundle as one
   ``POST /fhir`` (https://hl7.org/fhir/R4/http.html#transaction), in the order
   tests/e2e/test_synthea_bundles.py explains: the prerequisite ``batch`` Bundles one at a
   time, the ``conditional/`` patient transactions with ``--clients`` concurrent clients,
   then ``selfcontained/``. Any answer that is not 200, or an entry whose
   ``response.status`` is not 2xx, fails the run; afterwards ``_summary=count`` per type
   must give the counts of the files;
3. print the table and issue 4's targets; ``--write-docs`` writes the "Bundles and bulk
   loading" section of docs/benchmarks.md.

The server is always stopped (SIGTERM, then SIGKILL), also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docs_page
from bundles_docs import (
    BundlesRun,
    Dataset,
    Part,
    console_table,
    latencies,
    noisy,
    targets,
    write_section,
)
from harness import (
    HOST,
    BenchmarkError,
    Server,
    cpu_snapshot,
    free_port,
    request,
    run_in_workdir,
    running,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea"
# What the targets are about, set explicitly so that a variable left in the shell cannot
# measure something else: the SQLite store, writes on disk when acknowledged, indexing on.
ENVIRONMENT = {
    "ROFECARE_STORE": "sqlite",
    "ROFECARE_SQLITE_SYNCHRONOUS": "FULL",
    "ROFECARE_SEARCH_INDEXING": "true",
    # Synthea is US synthetic data (SNOMED diagnoses, results without a performer): it is
    # not the hospital's, and the Rofecare profiles would refuse much of it.
    "ROFECARE_PROFILE_VALIDATION": "off",
}
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
# The last lines of `rofecare load` (fhir_server/cli.py), on stderr.
SUMMARY = re.compile(
    r"Loaded [\d,]+ files \(([\d,]+) bundles\) in [\d.]+ s: ([\d,]+) resources,"
    r" ([\d,]+) resources/s"
)
FAILED = re.compile(r"\bfailed ([\d,]+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleFile:
    path: Path
    body: bytes  # sent as read
    kind: str  # batch or transaction
    entries: int
    types: Counter[str]


@dataclass(frozen=True)
class Files:
    prerequisites: list[BundleFile]
    conditional: list[BundleFile]
    selfcontained: list[BundleFile]

    @property
    def patients(self) -> list[BundleFile]:
        return self.conditional + self.selfcontained

    @property
    def counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for file in self.prerequisites + self.patients:
            total.update(file.types)
        return total

    def describe(self, source: str) -> Dataset:
        phases = [
            ("`conditional/prerequisites/` batches", self.prerequisites),
            ("`conditional/` patient transactions", self.conditional),
            ("`selfcontained/` patient transactions", self.selfcontained),
        ]
        sizes = [file.entries for file in self.patients]
        return Dataset(
            source=source,
            phases=[(name, len(files), sum(f.entries for f in files)) for name, files in phases],
            counts=dict(self.counts.most_common()),
            patient_entries=(min(sizes), int(statistics.median(sizes)), max(sizes)),
        )


def read_files(source: Path) -> Files:
    """Every Bundle of ``source``, in the folders the load order depends on."""
    if not (source / "conditional" / "prerequisites").is_dir():
        raise BenchmarkError(f"{source} has no conditional/prerequisites/: not the Synthea data")

    def folder(name: str, kind: str) -> list[BundleFile]:
        return [_read(path, kind) for path in sorted((source / name).glob("*.json"))]

    files = Files(
        prerequisites=folder("conditional/prerequisites", "batch"),
        conditional=folder("conditional", "transaction"),
        selfcontained=folder("selfcontained", "transaction"),
    )
    known = {f.path for f in files.prerequisites + files.patients} | {source / "manifest.json"}
    unknown = sorted(str(p.relative_to(source)) for p in source.rglob("*.json") if p not in known)
    if unknown:
        raise BenchmarkError(f"{source}: files of no known load order: {', '.join(unknown[:5])}")
    if not files.prerequisites or not files.conditional or not files.selfcontained:
        raise BenchmarkError(f"{source}: a folder of Bundles is empty")
    return files


def _read(path: Path, kind: str) -> BundleFile:
    body = path.read_bytes()
    try:
        bundle = json.loads(body)
    except ValueError as error:
        raise BenchmarkError(f"{path}: not JSON ({error})") from error
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != kind:
        raise BenchmarkError(f"{path}: not a {kind} Bundle; the load order assumes it is")
    entries = bundle.get("entry", [])
    types = Counter(entry["resource"]["resourceType"] for entry in entries)
    return BundleFile(path, body, kind, len(entries), types)


# -- CPU -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """CPU seconds so far of Rofecare's processes, of this script and of the machine."""

    at: float
    rofecare: float
    client: float
    machine: float

    def part(
        self,
        before: Usage,
        name: str,
        bundles: int,
        resources: int,
        latencies_s: list[float] | None = None,
        errors: int = 0,
        client: bool = False,
    ) -> Part:
        """The part between ``before`` and this; ``client`` when this script sent the
        requests (its CPU is then a column of its own)."""
        wall = self.at - before.at
        rofecare = (self.rofecare - before.rofecare) / wall
        mine = (self.client - before.client) / wall
        machine = (self.machine - before.machine) / wall
        return Part(
            name,
            bundles,
            resources,
            wall,
            latencies_s=latencies_s or [],
            errors=errors,
            rofecare_cpu=rofecare,
            client_cpu=mine if client else None,
            other_cpu=max(0.0, machine - rofecare - mine),
        )


def usage(server: Server | None) -> Usage:
    """With a server: its processes; without: the finished children (the loader)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    if server is None:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        rofecare = children.ru_utime + children.ru_stime
        # /proc/stat "cpu": user nice system idle iowait irq softirq steal (clock ticks)
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        machine = (sum(ticks[0:3]) + sum(ticks[5:7])) / _CLOCK_TICKS
    else:
        cpu = cpu_snapshot(server)
        rofecare, machine = cpu.server_user + cpu.server_sys, cpu.machine
    return Usage(time.monotonic(), rofecare, me.ru_utime + me.ru_stime, machine)


# -- 1. rofecare load ----------------------------------------------------------------------------


def bulk_load(
    source: Path,
    concurrency: int,
    jobs: int,
    timeout: float,
    work: Path,
    profile_validation: str = ENVIRONMENT["ROFECARE_PROFILE_VALIDATION"],
) -> tuple[Part, float]:
    """``rofecare load`` into a fresh data directory; (the part, the rate it printed)."""
    name = f"{jobs}-{profile_validation}"
    argv = [sys.executable, "-m", "fhir_server", "load", str(source),
            "--data-dir", str(work / f"load-data-{name}"), "--concurrency", str(concurrency),
            "--jobs", str(jobs)]  # fmt: skip
    log = work / f"load-{name}.log"
    environment = {**os.environ, **ENVIRONMENT, "ROFECARE_PROFILE_VALIDATION": profile_validation}
    print(
        f"rofecare load {source} --concurrency {concurrency} --jobs {jobs}"
        f" (ROFECARE_PROFILE_VALIDATION={profile_validation}) ...",
        flush=True,
    )
    before = usage(None)
    with log.open("wb") as out:
        try:
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env=environment,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as error:
            raise BenchmarkError(f"rofecare load took over {timeout:.0f} s") from error
    after = usage(None)
    text = log.read_text(errors="replace")
    tail = "\n".join(text.replace("\r", "\n").splitlines()[-12:])
    summary, failed = SUMMARY.search(text), FAILED.search(text)
    if summary is None or failed is None:
        raise BenchmarkError(f"rofecare load printed no summary (exit {done.returncode}):\n{tail}")
    failures = _int(failed[1])
    if done.returncode != 0 or failures:
        raise BenchmarkError(
            f"rofecare load: exit {done.returncode}, {failures:,} failed (report in its"
            f" data directory; --keep keeps it):\n{tail}"
        )
    label = f"`rofecare load --concurrency {concurrency} --jobs {jobs}`"
    if profile_validation != ENVIRONMENT["ROFECARE_PROFILE_VALIDATION"]:
        label += f", profiles and rules: {profile_validation}"
    part = after.part(
        before,
        label,
        bundles=_int(summary[1]),
        resources=_int(summary[2]),
    )
    return part, float(_int(summary[3]))


def _int(text: str) -> int:
    return int(text.replace(",", ""))


# -- 2. Bundles over HTTP ------------------------------------------------------------------------


def http_load(
    files: Files, workers: int, clients: int, port: int, timeout: float, work: Path
) -> list[Part]:
    """POST every Bundle to a fresh ``rofecare serve``: the phases, the patient
    transactions (conditional/ and selfcontained/ together), the whole load."""
    argv = ["env", *(f"{k}={v}" for k, v in ENVIRONMENT.items()), sys.executable, "-m",
            "fhir_server", "serve", "--host", HOST, "--port", str(port),
            "--data-dir", str(work / "serve-data"), "--workers", str(workers)]  # fmt: skip
    # The prerequisite batches name nothing of each other (their references are logical, by
    # identifier), so they go together, as a migration tool sends independent Bundles.
    together = max(1, min(clients, len(files.prerequisites)))
    phases = [
        (f"prerequisites (batch, {together} clients)", files.prerequisites, together),
        (f"conditional/ ({clients} clients)", files.conditional, clients),
        (f"selfcontained/ ({clients} clients)", files.selfcontained, clients),
    ]
    print(f"rofecare serve --workers {workers} on port {port} ...", flush=True)
    with running(Server("rofecare serve", argv, port, work / "server.log")) as server:
        marks = [usage(server)]
        results: list[list[tuple[float | None, list[str]]]] = []
        for name, group, concurrent in phases:
            print(f"POST {len(group)} Bundles: {name} ...", flush=True)
            with ThreadPoolExecutor(max_workers=concurrent) as pool:
                results.append(list(pool.map(lambda f: post(port, f, timeout), group)))
            marks.append(usage(server))
            errors = [error for _, found in results[-1] for error in found]
            if errors:
                server.check_alive()
                shown = "\n  ".join(errors[:5])
                raise BenchmarkError(f"{name}: {len(errors)} errors:\n  {shown}")
        check_counts(port, files.counts)

    def part(name: str, first: int, last: int, latency: bool = True) -> Part:
        """Phases ``first`` to ``last``; ``latency``: of each Bundle (else "-")."""
        group = [f for _, files_, _ in phases[first : last + 1] for f in files_]
        timed = [seconds for done in results[first : last + 1] for seconds, _ in done]
        return marks[last + 1].part(
            marks[first],
            name,
            bundles=len(group),
            resources=sum(f.entries for f in group),
            latencies_s=[s for s in timed if s is not None] if latency else [],
            errors=sum(len(e) for done in results[first : last + 1] for _, e in done),
            client=True,
        )

    parts = [part(name, index, index) for index, (name, _, _) in enumerate(phases)]
    patients = part("patient transactions (both folders)", 1, 2)
    return [*parts, patients, part("whole load over HTTP", 0, 2, latency=False)]


def post(port: int, file: BundleFile, timeout: float) -> tuple[float | None, list[str]]:
    """One Bundle, one POST on a fresh connection (never sent twice); (seconds, errors)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        started = time.perf_counter()
        connection.request("POST", "/fhir", file.body, FHIR_JSON)
        answer = connection.getresponse()
        body = answer.read()
        seconds = time.perf_counter() - started
    except (OSError, http.client.HTTPException) as error:
        return None, [f"{file.path.name}: {type(error).__name__}: {error}"]
    finally:
        connection.close()
    return seconds, check_answer(file, answer.status, body)


def check_answer(file: BundleFile, status: int, body: bytes) -> list[str]:
    name = file.path.name
    if status != 200:
        return [f"{name}: HTTP {status}: {body[:300]!r}"]
    try:
        bundle = json.loads(body)
    except ValueError:
        return [f"{name}: the answer is no JSON: {body[:200]!r}"]
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != f"{file.kind}-response":
        return [f"{name}: the answer is no {file.kind}-response Bundle: {body[:200]!r}"]
    entries = bundle.get("entry", [])
    if len(entries) != file.entries:
        return [f"{name}: {len(entries)} response entries for {file.entries} sent"]
    bad = [
        (index, entry.get("response", {}))
        for index, entry in enumerate(entries)
        if not str(entry.get("response", {}).get("status", "")).startswith("2")
    ]
    if not bad:
        return []
    index, response = bad[0]
    return [
        f"{name}: {len(bad)} entries not 2xx, first entry[{index}]: {json.dumps(response)[:300]}"
    ]


def check_counts(port: int, expected: Counter[str]) -> None:
    """The store holds what was sent: ``_summary=count`` per type, against the files."""
    wrong = []
    for kind, count in sorted(expected.items()):
        url = f"/fhir/{kind}?_summary=count"
        try:
            status, body = request(port, "GET", url, timeout=60)
            total = json.loads(body).get("total") if status == 200 else f"HTTP {status}"
        except (OSError, ValueError) as error:
            raise BenchmarkError(f"GET {url}: {error}") from error
        if total != count:
            wrong.append(f"{kind} {total} (sent {count:,})")
    if wrong:
        raise BenchmarkError(f"the store does not hold what was sent: {', '.join(wrong)}")


# -- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> int:
    source = args.source.resolve()
    files = read_files(source)
    shown = os.path.relpath(source, ROOT) if source.is_relative_to(ROOT.parent) else str(source)
    dataset = files.describe(shown)
    print(f"{dataset.bundles} Bundles, {dataset.resources:,} resources in {source}", flush=True)
    loads, own_rates = [], []
    for jobs in args.jobs:
        load, own_rate = bulk_load(source, args.concurrency, jobs, args.load_timeout, work)
        print(f"  {load.resources:,} resources in {load.seconds:.1f} s", flush=True)
        loads.append(load)
        own_rates.append(own_rate)
    # Once more with every Rofecare profile and rule checked (none refusing: Synthea is not
    # the hospital's data): what checking them costs a load. Not a target row.
    checked, _ = bulk_load(
        source, args.concurrency, max(args.jobs), args.load_timeout, work, "warn"
    )
    print(f"  {checked.resources:,} resources in {checked.seconds:.1f} s", flush=True)
    port = args.port or free_port()
    http = http_load(files, args.workers, args.clients, port, args.timeout, work)
    patients, whole = http[-2], http[-1]
    warnings = []
    for load in [*loads, checked]:
        if load.resources != dataset.resources:
            warnings.append(
                f"{load.name} counted {load.resources:,} resources, the files hold"
                f" {dataset.resources:,}"
            )
    verdicts = targets(loads, whole)
    machine = docs_page.machine(work)
    print()
    print(console_table([*loads, checked, *http]))
    print()
    print(f"patient transaction Bundles ({patients.bundles}, one POST each): {latencies(patients)}")
    for jobs, own_rate in zip(args.jobs, own_rates, strict=True):
        print(f"rofecare load --jobs {jobs}, its own figure (from the start of loading):"
              f" {own_rate:,.0f} resources/s")  # fmt: skip
    loud = noisy([*loads, checked, *http])
    if loud:
        print(f"other programs used the CPU during {', '.join(loud)}: noisy figures")
    print()
    for label, measured, verdict in verdicts:
        print(f"target {label:<40} {measured:>10}  {verdict}")
    print()
    print("\n".join(f"{name}: {value}" for name, value in machine))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.write_docs:
        write_section(
            DOCS,
            BundlesRun(
                date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                command=shlex.join(["python", "benchmarks/bundles.py", *sys.argv[1:]]),
                concurrency=args.concurrency,
                workers=args.workers,
                clients=args.clients,
                dataset=dataset,
                jobs=args.jobs,
                loads=loads,
                checked=checked,
                load_own_rates=own_rates,
                http=http,
                patients=patients,
                targets=verdicts,
                warnings=warnings,
                machine=machine,
            ),
        )
        print(f"wrote the Bundles section of {DOCS.relative_to(ROOT)}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _job_counts(text: str) -> list[int]:
    return [_positive(part) for part in text.split(",")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SYNTHEA, help="the Synthea folder")
    parser.add_argument(
        "--concurrency", type=_positive, default=4, help="rofecare load --concurrency (4)"
    )
    parser.add_argument(
        "--jobs",
        type=_job_counts,
        default=[1, 2],
        help="rofecare load --jobs, one run per value, comma-separated (1,2)",
    )
    parser.add_argument("--workers", type=_positive, default=1, help="rofecare serve --workers (1)")
    parser.add_argument(
        "--clients", type=_positive, default=4, help="concurrent HTTP clients for patients (4)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per POST (300)")
    parser.add_argument(
        "--load-timeout", type=float, default=600, help="seconds for rofecare load (600)"
    )
    parser.add_argument("--port", type=int, default=0, help="server port (a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the Bundles section")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("rofecare-bundles-", args.keep, lambda work: run(args, work))


if __name__ == "__main__":
    raise SystemExit(main())
