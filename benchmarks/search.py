"""FHIR search latency and throughput at 100,000+ resources: ``python benchmarks/search.py``.

Why: search is what a clinical screen does most after read, and its cost grows with the
data, so the project sets targets at 100,000 resources on this 2-core machine: p95 < 20 ms
for single-parameter searches, < 60 ms for chained and ``_revinclude``, and writes with
search indexing at >= 70 % of the rate without. This script measures them as a user runs
the server (``python -m fhir_server serve``, one worker), over real HTTP:

1. ensure the dataset (``search_data.py``: Synthea copies, cached in ``--data-dir``);
2. start the server on it, wait for /ready and /fhir/metadata;
3. per query (https://hl7.org/fhir/R4/search.html): check one answer (200, a searchset
   Bundle with matches; ``total`` (asked with ``_total=accurate`` when the default answer
   has none) against what the loader counted), then wrk with the
   connections of ``benchmarks/rest.py`` (targets) and with one (latency without queueing);
   a query that fails is reported FAILED, never measured;
4. walk ``_sort=-date&_count=50`` to page 10 through ``link[relation=next]``, checking the
   order and that no resource repeats;
5. run rest.py's create scenario on fresh data directories with ROFECARE_SEARCH_INDEXING
   true and false, and compare.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import docs_page
import rest
import search_data
from harness import (
    BenchmarkError,
    Load,
    Scenario,
    Server,
    free_port,
    measure,
    request,
    run_in_workdir,
    running,
)
from search_docs import Paging, Row, SearchRun, Writes, console_table, paging_lines, write_section

from fhir_server.config import Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
P95_TARGET_MS = {"single": 20.0, "chained": 60.0, "revinclude": 60.0}
WRITE_RATIO_TARGET = 0.70
SORTED = [("_sort", "-date"), ("_count", "50")]
TIMEOUT_S = 30.0  # one answer slower than this fails the scenario instead of stalling the run


# -- the queries ---------------------------------------------------------------------------------


def path(resource_type: str, params: list[tuple[str, str]]) -> str:
    """``/fhir/Type?...`` with values percent-encoded (``|`` as %7C) but ``:`` and ``/`` kept."""
    return f"/fhir/{resource_type}?{urlencode(params, quote_via=quote, safe=':/')}"


def queries(data: search_data.Dataset) -> list[Row]:
    """The issue's queries, with values chosen from the data (see search_data.Dataset)."""
    code = f"{data.top_code['system']}|{data.top_code['code']}"
    patient = data.busiest_patient
    chart = data.busiest_patient_observations
    start, end = (moment.date().isoformat() for moment in search_data.DATE_RANGE)
    dates = [("date", f"ge{start}"), ("date", f"lt{end}")]
    chained = [("subject:Patient.name", search_data.CHAINED_NAME)]
    revinclude = [("_id", patient), ("_revinclude", "Observation:subject")]
    return [
        Row(
            "token", path("Observation", [("code", code)]), "single", data.top_code["observations"]
        ),
        Row(
            "string prefix",
            path("Patient", [("name", search_data.NAME_PREFIX)]),
            "single",
            data.patients_matching_name_prefix,
        ),
        Row("date range", path("Observation", dates), "single", data.observations_in_date_range),
        Row("reference", path("Observation", [("subject", f"Patient/{patient}")]), "single", chart),
        Row("chained", path("Observation", chained), "chained", data.observations_of_chained_name),
        Row("_revinclude", path("Patient", revinclude), "revinclude", 1, expected_included=chart),
        Row("_sort page 1", path("Observation", SORTED), "sort", data.counts.get("Observation", 0)),
    ]


def check(port: int, row: Row) -> list[str]:
    """One answer of ``row``'s query must be a searchset with matches; return warnings."""
    status, body = get(port, row.path)
    if status != 200:
        raise BenchmarkError(f"GET {row.path} answered {status}: {body[:300]!r}")
    bundle = _bundle(body, row.path)
    modes = [entry.get("search", {}).get("mode", "match") for entry in bundle.get("entry", [])]
    row.matches, row.included = modes.count("match"), modes.count("include")
    if not isinstance(bundle.get("total"), int):  # large sets carry a total only when asked
        status, body = get(port, row.path + "&_total=accurate")
        bundle = _bundle(body, row.path) if status == 200 else {}
    row.total = bundle.get("total") if isinstance(bundle.get("total"), int) else None
    if row.matches == 0:
        raise BenchmarkError(f"GET {row.path} matched nothing; the loader counted {row.expected}")
    if row.kind == "revinclude" and row.included == 0:
        raise BenchmarkError(f"GET {row.path} included no Observations")
    warnings = []
    if row.total is not None and row.total != row.expected:
        warnings.append(f"{row.name}: total {row.total:,}, the loader counted {row.expected:,}")
    if row.kind == "revinclude" and row.included != row.expected_included:
        warnings.append(
            f"{row.name}: {row.included:,} included, the loader counted {row.expected_included:,}"
        )
    return warnings


def get(port: int, url: str) -> tuple[int, bytes]:
    try:
        return request(port, "GET", url, timeout=TIMEOUT_S)
    except TimeoutError as error:
        raise BenchmarkError(f"GET {url}: no answer within {TIMEOUT_S:.0f} s") from error
    except OSError as error:
        raise BenchmarkError(f"GET {url}: {error}") from error


def _bundle(body: bytes, url: str) -> dict[str, Any]:
    try:
        bundle = json.loads(body)
    except ValueError as error:
        raise BenchmarkError(f"GET {url} did not answer JSON: {body[:200]!r}") from error
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BenchmarkError(f"GET {url} did not answer a Bundle: {body[:200]!r}")
    if bundle.get("type") != "searchset":
        raise BenchmarkError(f"GET {url} answered a {bundle.get('type')!r} Bundle, not searchset")
    return bundle


def next_link(bundle: dict[str, Any]) -> str | None:
    """``link[relation=next].url`` as a path on our server (the host in it may differ)."""
    for link in bundle.get("link", []):
        if link.get("relation") == "next" and isinstance(link.get("url"), str):
            parts = urlsplit(str(link["url"]))
            return parts.path + (f"?{parts.query}" if parts.query else "")
    return None


# -- paging --------------------------------------------------------------------------------------


def walk(port: int, first: str, pages: int) -> list[float]:
    """Seconds per page from page 1 to ``pages``; order and uniqueness checked on the way."""
    seconds: list[float] = []
    seen: set[str] = set()
    previous: datetime | None = None
    url: str | None = first
    for page in range(1, pages + 1):
        if url is None:
            raise BenchmarkError(f"page {page - 1} has no link[relation=next]")
        started = time.perf_counter()
        status, body = get(port, url)
        seconds.append(time.perf_counter() - started)
        if status != 200:
            raise BenchmarkError(f"page {page}: GET {url} answered {status}: {body[:300]!r}")
        bundle = _bundle(body, url)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            key = f"{resource.get('resourceType')}/{resource.get('id')}"
            if key in seen:
                raise BenchmarkError(f"page {page} repeats {key}")
            seen.add(key)
            moment = search_data.effective(resource)
            if moment is not None and previous is not None and moment > previous:
                raise BenchmarkError(f"page {page}: {key} ({moment}) is after {previous}")
            previous = moment if moment is not None else previous
        if not bundle.get("entry"):
            raise BenchmarkError(f"page {page} is empty")
        url = next_link(bundle)
    return seconds


def paging(port: int, pages: int, walks: int, budget: float) -> Paging:
    """``walks`` walks, fewer if they take over ``budget`` seconds (a slow sort stays bounded)."""
    result = Paging(path("Observation", SORTED), pages, walks)
    runs: list[list[float]] = []
    started = time.monotonic()
    try:
        while len(runs) < walks and (not runs or time.monotonic() - started < budget):
            runs.append(walk(port, result.path, pages))
    except BenchmarkError as error:
        result.failure = str(error)
        return result
    result.walks = len(runs)
    by_page = list(zip(*runs, strict=True))
    result.per_page_ms = [(_pct(p, 0.5) * 1e3, _pct(p, 0.95) * 1e3) for p in by_page]
    sums = [sum(run) for run in runs]
    result.to_last_ms = (_pct(sums, 0.5) * 1e3, _pct(sums, 0.95) * 1e3)
    result.pages_per_s = pages * len(runs) / sum(sums)
    return result


def _pct(values: list[float] | tuple[float, ...], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- writes with and without indexing ------------------------------------------------------------


def writes(load: Load, patients: int, work: Path, workers: int = 1, rounds: int = 2) -> Writes:
    """rest.py's create scenario, on a fresh data directory per run, indexing on and off in
    turn for ``rounds`` rounds."""
    outcome = Writes()
    if "search_indexing" not in Settings.model_fields:
        outcome.failure = "this build has no ROFECARE_SEARCH_INDEXING setting (search_indexing)"
        return outcome
    try:
        for round_number, indexing in ((r, i) for r in range(rounds) for i in (True, False)):
            flag = "true" if indexing else "false"
            port = free_port()
            data_dir = work / f"w-{flag}-{round_number}"
            argv = ["env", f"ROFECARE_SEARCH_INDEXING={flag}", *serve(port, data_dir, workers)]
            name = f"create, indexing {'on' if indexing else 'off'}"
            print(f"{name}: seeding {patients:,} Patients, then {load.duration} s ...", flush=True)
            log = work / f"writes-{flag}-{round_number}.log"
            with running(Server(name, argv, port, log)) as server:
                seeded = rest.seed(port, patients)
                create = next(s for s in rest.scenarios(seeded) if s.name == "create")
                result = measure(server, create, load, work, label=name)
                if result.errors:
                    raise BenchmarkError(f"{result.errors} errors ({result.error_detail()})")
                _check_indexing(port, seeded, indexing)
            (outcome.indexed if indexing else outcome.unindexed).append(result)
    except (BenchmarkError, OSError) as error:
        outcome.failure = str(error) or type(error).__name__
    return outcome


def _check_indexing(port: int, seeded: list[dict[str, Any]], indexing: bool) -> None:
    """Evidence that the setting took effect: a seeded family is found only when indexing."""
    family = seeded[0]["name"][0]["family"]
    status, body = get(port, path("Patient", [("family", family)]))
    found = status == 200 and any(
        e.get("resource", {}).get("resourceType") == "Patient"
        for e in json.loads(body).get("entry", [])
    )
    if indexing and not found:
        raise BenchmarkError(f"with indexing on, Patient?family={family} found nothing ({status})")
    if not indexing and found:
        raise BenchmarkError(f"ROFECARE_SEARCH_INDEXING=false, yet Patient?family={family} found")


# -- the run -------------------------------------------------------------------------------------


def serve(port: int, data_dir: Path, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "fhir_server", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--data-dir", str(data_dir),
            "--workers", str(workers)]  # fmt: skip


def measure_query(server: Server, row: Row, load: Load, single: Load | None, work: Path) -> None:
    scenario = Scenario(row.name.replace(" ", "-"), [f"GET\t{row.path}"], 200)
    row.loaded = measure(server, scenario, load, work)
    if single is not None:
        row.unloaded = measure(server, scenario, single, work)
    for result in (row.loaded, row.unloaded):
        if result is not None and result.errors:
            raise BenchmarkError(f"{result.errors} errors under wrk ({result.error_detail()})")


def targets(rows: list[Row], outcome: Writes) -> list[tuple[str, str, str]]:
    """(target, measured, verdict), judged on the runs with rest.py's connections."""
    lines = []
    for row in rows:
        limit = P95_TARGET_MS.get(row.kind)
        if limit is None:
            continue
        measured = row.loaded.p95_ms if row.loaded is not None and not row.failure else None
        shown = "-" if measured is None else f"{measured:.2f} ms"
        verdict = "not measured" if measured is None else "met" if measured < limit else "NOT MET"
        lines.append((f"{row.name} p95 < {limit:g} ms", shown, verdict))
    ratio = outcome.ratio
    shown = "-" if ratio is None else f"{ratio:.0%}"
    verdict = (
        "not measured" if ratio is None else "met" if ratio >= WRITE_RATIO_TARGET else "NOT MET"
    )
    lines.append((f"writes with indexing >= {WRITE_RATIO_TARGET:.0%} of without", shown, verdict))
    return lines


def run(args: argparse.Namespace, work: Path) -> int:
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (apt-get install wrk)")
    data = search_data.ensure(
        args.data_dir, args.resources, args.source.resolve(), args.smith_share, args.reload
    )
    print(search_data.describe(data), flush=True)
    load = Load(args.duration, args.connections, args.threads, args.warmup)
    single = Load(args.duration, 1, 1, args.warmup) if args.latency_connections else None
    rows = queries(data)
    warnings: list[str] = []
    port = args.port or free_port()
    print(f"server on port {port}, data in {args.data_dir}", flush=True)
    argv = serve(port, args.data_dir, args.workers)
    with running(Server("rofecare", argv, port, work / "server.log")) as srv:
        status, body = get(port, "/fhir/metadata")
        if status != 200:
            raise BenchmarkError(f"/fhir/metadata answered {status}: {body[:200]!r}")
        for row in rows:
            print(f"{row.name}: {row.path}", flush=True)
            try:
                warnings += check(port, row)
                measure_query(srv, row, load, single, work)
            except BenchmarkError as error:
                row.failure = str(error)
                print(f"  FAILED: {error}", file=sys.stderr, flush=True)
                srv.check_alive()
        print(f"paging: {args.walks} walks to page {args.pages} ...", flush=True)
        pages = paging(port, args.pages, args.walks, args.paging_budget)
    outcome = Writes(failure="skipped (--skip-writes)", skipped=True)
    if not args.skip_writes:
        outcome = writes(load, args.write_patients, work, args.workers, args.write_rounds)
    verdicts = targets(rows, outcome)
    failed = summarise(rows, pages, outcome, verdicts, warnings)
    if args.write_docs and failed:
        print("not writing docs: a scenario failed", file=sys.stderr)
    elif args.write_docs:
        write_section(
            DOCS,
            SearchRun(
                date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                command=shlex.join(["python", "benchmarks/search.py", *sys.argv[1:]]),
                duration=args.duration,
                connections=args.connections,
                threads=args.threads,
                workers=args.workers,
                latency_connections=args.latency_connections,
                dataset=data,
                rows=rows,
                paging=pages,
                writes=outcome,
                targets=verdicts,
                warnings=warnings,
                machine=docs_page.machine(args.data_dir),
            ),
        )
        print(f"wrote the Search section of {DOCS.relative_to(ROOT)}")
    return 1 if failed else 0


def summarise(
    rows: list[Row],
    pages: Paging,
    outcome: Writes,
    verdicts: list[tuple[str, str, str]],
    warnings: list[str],
) -> bool:
    """Print everything; True when any part failed (a target NOT MET is not a failure)."""
    print()
    print(console_table(rows))
    print()
    print("\n".join(paging_lines(pages)))
    print()
    for label, results in (("indexing on ", outcome.indexed), ("indexing off", outcome.unindexed)):
        for result in results:
            print(f"create, {label}: {result.rps:,.0f}/s, p95 {result.p95_ms:.2f} ms")
    if outcome.failure:
        print(f"writes: {outcome.failure}", file=sys.stderr)
    print()
    for label, measured, verdict in verdicts:
        print(f"target {label:<44} {measured:>10}  {verdict}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for row in rows:
        if row.failure:
            print(f"FAILED {row.name}: {row.failure}", file=sys.stderr)
    broken_writes = outcome.failure is not None and not outcome.skipped
    return any(r.failure for r in rows) or pages.failure is not None or broken_writes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    search_data.add_arguments(parser)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds first (2)")
    parser.add_argument(
        "--latency-connections", type=int, choices=[0, 1], default=1,
        help="1: also a one-connection run per query (default); 0: skip it",
    )  # fmt: skip
    parser.add_argument("--pages", type=int, default=10, help="pages of the paging walk (10)")
    parser.add_argument("--walks", type=int, default=20, help="paging walks (20)")
    parser.add_argument(
        "--paging-budget", type=float, default=60, help="seconds after which walks stop (60)"
    )
    parser.add_argument("--write-patients", type=int, default=1000, help="seeded before creates")
    parser.add_argument("--skip-writes", action="store_true", help="no indexing on/off writes")
    parser.add_argument(
        "--write-rounds", type=int, default=2, help="indexing on/off write runs, in turn (2)"
    )
    parser.add_argument("--port", type=int, default=0, help="server port (a free one)")
    parser.add_argument("--workers", type=int, default=1, help="rofecare serve --workers (1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the Search section")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.pages, args.walks) < 1:
        parser.error("--duration, --connections, --threads, --pages and --walks must be positive")
    args.threads = min(args.threads, args.connections)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("rofecare-search-", args.keep, lambda work: run(args, work))


if __name__ == "__main__":
    raise SystemExit(main())
