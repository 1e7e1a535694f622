"""Throughput and latency of the FHIR REST API, in one command: ``python benchmarks/rest.py``.

Why: the project has figures it wants (read >= 5,000/s, create of a validated Patient
>= 1,000/s, p95 read < 5 ms) and needs to know, on a given machine and commit, whether it
meets them and what stands in the way. So this script measures the server as shipped and as
a user starts it (``rofecare serve``, one worker, SQLite with ``synchronous=FULL``), over
real HTTP with ``wrk``, not through an in-process test client:

1. start ``rofecare serve`` on a free port with a fresh data directory, wait for /ready;
2. create ``--patients`` realistic Patients over HTTP and keep their ids;
3. run wrk scenarios read, create and update (``benchmarks/lua/replay.lua``), each after a
   short discarded warm-up; any non-2xx answer or socket error fails the scenario;
4. print requests/s and latency percentiles next to the targets; ``--baseline`` adds the same
   read against a bare FastAPI + SQLite app (and its variant with the query on the event
   loop, see benchmarks/baseline_app.py), ``--profile`` a py-spy profile of the server
   under reads, ``--write-docs`` rewrites docs/benchmarks.md.

The server is always stopped (SIGTERM, then SIGKILL), also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docs_page
import fixtures
import report
from harness import (
    BenchmarkError,
    Load,
    Scenario,
    Server,
    free_port,
    measure,
    profile,
    request,
    run_in_workdir,
    running,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"


# -- data --------------------------------------------------------------------------------------


def seed(port: int, count: int) -> list[dict[str, Any]]:
    """Create ``count`` Patients over HTTP; return them as the server stored them."""
    rng = random.Random(20240601)
    bodies = [json.dumps(fixtures.patient(rng, n)).encode() for n in range(count)]

    def create(body: bytes) -> dict[str, Any]:
        status, answer = request(port, "POST", "/fhir/Patient", body)
        if status != 201:
            raise BenchmarkError(f"seeding: POST /fhir/Patient answered {status}: {answer[:300]!r}")
        stored: dict[str, Any] = json.loads(answer)
        return stored

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(create, bodies))


def scenarios(seeded: list[dict[str, Any]]) -> list[Scenario]:
    rng = random.Random(20240602)
    ids = [p["id"] for p in seeded]
    creates = [fixtures.patient(rng, len(ids) + n) for n in range(500)]
    updates = [(i, fixtures.patient(rng, n, resource_id=i)) for n, i in enumerate(ids)]
    rng.shuffle(updates)
    return [
        Scenario("read", [f"GET\t/fhir/Patient/{i}" for i in ids], 200),
        Scenario("create", [f"POST\t/fhir/Patient\t{_compact(p)}" for p in creates], 201),
        Scenario("update", [f"PUT\t/fhir/Patient/{i}\t{_compact(p)}" for i, p in updates], 200),
    ]


def _compact(resource: dict[str, Any]) -> str:
    return json.dumps(resource, separators=(",", ":"))  # one line, no tabs


def baseline_db(path: Path, seeded: list[dict[str, Any]]) -> None:
    """The bare app's file: the same Patients, stored as Rofecare returned them."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE patient (id TEXT PRIMARY KEY, body BLOB NOT NULL)")
        conn.executemany(
            "INSERT INTO patient VALUES (?, ?)",
            [(p["id"], json.dumps(p, separators=(",", ":")).encode()) for p in seeded],
        )


# -- the run -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per scenario (15)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds first (2)")
    parser.add_argument("--patients", type=int, default=1000, help="Patients to seed (1000)")
    parser.add_argument("--port", type=int, default=0, help="server port (a free one)")
    parser.add_argument("--workers", type=int, default=1, help="rofecare serve --workers (1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--baseline", action="store_true", help="also a bare FastAPI+SQLite read")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="read",
        choices=["read", "create", "update"],
        help="py-spy profile of the server during a further run of a scenario (read)",
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    counts = (args.duration, args.connections, args.threads, args.patients, args.workers)
    if min(counts) < 1:
        parser.error(
            "--duration, --connections, --threads, --patients and --workers must be positive"
        )
    args.threads = min(args.threads, args.connections)
    return args


def run(args: argparse.Namespace, work: Path) -> int:
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (apt-get install wrk)")
    rofecare = shutil.which("rofecare")
    if rofecare is None:
        raise BenchmarkError("the rofecare command is not on PATH (pip install -e .)")
    load = Load(args.duration, args.connections, args.threads, args.warmup)
    data = work / "data"
    port = args.port or free_port()
    argv = [rofecare, "serve", "--port", str(port), "--data-dir", str(data)]
    argv += ["--workers", str(args.workers)]
    results: list[report.Result] = []
    profiled: report.Profile | None = None
    baselines: list[report.Result] = []
    print(f"rofecare serve on port {port}, data in {data}", flush=True)
    with running(Server("rofecare", argv, port, work / "rofecare.log")) as server:
        started = time.monotonic()
        seeded = seed(port, args.patients)
        print(f"seeded {len(seeded)} Patients in {time.monotonic() - started:.1f} s", flush=True)
        plan = scenarios(seeded)
        for scenario in plan:
            print(f"{scenario.name}: {args.duration} s ...", flush=True)
            results.append(measure(server, scenario, load, work))
        if args.profile:
            print(f"{args.profile} under py-spy ...", flush=True)
            chosen = next(s for s in plan if s.name == args.profile)
            profiled = profile(server, chosen, load, work)
    if args.baseline:
        db = work / "baseline.sqlite3"
        baseline_db(db, seeded)
        for label, extra in report.BASELINES:
            port = args.port or free_port()
            bare = [sys.executable, str(HERE / "baseline_app.py"), "--port", str(port)]
            bare += ["--db", str(db), *extra]
            print(f"{label} ...", flush=True)
            with running(Server(label, bare, port, work / "baseline.log")) as server:
                baselines.append(measure(server, plan[0], load, work, label=label))
    failed = summarise(results, baselines, profiled)
    if args.write_docs and failed:
        print("not writing docs: a scenario failed", file=sys.stderr)
    elif args.write_docs:
        docs_page.write_docs(
            DOCS,
            docs_page.Run(
                date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                command=shlex.join(["python", "benchmarks/rest.py", *sys.argv[1:]]),
                duration=args.duration,
                connections=args.connections,
                threads=args.threads,
                patients=args.patients,
                workers=args.workers,
                results=results,
                baselines=baselines,
                profile=profiled,
                machine=docs_page.machine(data),
            ),
        )
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 1 if failed else 0


def summarise(
    results: list[report.Result], baselines: list[report.Result], profiled: report.Profile | None
) -> bool:
    """Print the table, the targets, the profile and any failure; True when a run failed."""
    shown = results + baselines
    print()
    print(report.table(shown))
    print()
    for label, measured, verdict in report.target_lines({r.scenario: r for r in results}):
        print(f"target {label:<48} {measured:>12}  {verdict}")
    if profiled is not None:
        print()
        print(report.profile_text(profiled))
    for r in shown:
        if r.other_cpu > report.NOISY:
            print(f"warning: other programs used {r.other_cpu:.0%} of a core during {r.scenario};"
                  " its figures are noisy", file=sys.stderr)  # fmt: skip
    failed = [r for r in shown if r.errors]
    for r in failed:
        print(f"FAILED {r.scenario}: {r.errors} errors ({r.error_detail()})", file=sys.stderr)
    return bool(failed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("rofecare-bench-", args.keep, lambda work: run(args, work))


if __name__ == "__main__":
    raise SystemExit(main())
