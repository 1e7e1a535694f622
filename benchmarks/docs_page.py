"""docs/benchmarks.md from a benchmark run, and the machine it ran on.

Why: figures without the machine, the date and the exact command cannot be compared or
repeated. ``--write-docs`` rewrites the page whole, except the sections other benchmarks
write ("Search", "Bundles and bulk loading"; carried over) and its "What limits it" section,
which a person writes from what the figures and the profile show; it is carried over too.
"""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from report import COLUMNS, NOISY, Profile, Result, cells, target_lines

LIMITS_HEADING = "## What limits it"


# -- machine -------------------------------------------------------------------------------


def machine(data_dir: Path) -> list[tuple[str, str]]:
    """What the figures depend on, read from the running system."""
    cpu = _first(Path("/proc/cpuinfo"), r"^model name\s*:\s*(.+)$") or platform.processor()
    mem_kb = _first(Path("/proc/meminfo"), r"^MemTotal:\s*(\d+) kB")
    memory = f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb else "unknown"
    os_name = _first(Path("/etc/os-release"), r'^PRETTY_NAME="?([^"\n]+)"?') or platform.system()
    packages = ", ".join(
        f"{name} {_version(name)}"
        for name in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson")
    )
    return [
        ("CPU", cpu),
        ("CPUs available (nproc)", str(len(os.sched_getaffinity(0)))),
        ("memory", memory),
        ("OS", f"{os_name}, Linux {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("SQLite", sqlite3.sqlite_version),
        ("data directory filesystem", _filesystem(data_dir)),
        ("wrk", _wrk_version()),
        ("Rofecare", _version("rofecare")),
        ("packages", packages),
        ("host speed when written", host_speed()),
    ]


def host_speed() -> str:
    """This host's pure-Python speed as the figures are written: ``benchmarks/indexing.py``
    (the search indexer over every resource of the Synthea sample, one core, no I/O).

    Why: this machine shares its host; the same code ran a quarter slower an hour apart
    (2026-12-04: 11,031 resources/s at 11:30 UTC, 8,112 at 12:30), and every figure with
    it. Beside each run, it tells a slow run from a slow host."""
    from indexing import DEFAULT_DATA, synthea_resources

    from fhir_server.search.indexer import Indexer
    from fhir_server.search.registry import load_search_parameters

    resources = synthea_resources(DEFAULT_DATA)
    if not resources:
        return "unknown (no Synthea sample beside the project)"
    indexer = Indexer(load_search_parameters())
    started = time.perf_counter()
    for resource in resources:
        indexer.entries(resource)
    rate = len(resources) / (time.perf_counter() - started)
    return f"{rate:,.0f} resources/s indexing the Synthea sample (benchmarks/indexing.py)"


def _first(path: Path, pattern: str) -> str | None:
    try:
        match = re.search(pattern, path.read_text(), re.MULTILINE)
    except OSError:
        return None
    return match[1].strip() if match else None


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _filesystem(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and resolved.startswith(fields[1]) and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "unknown"


# -- docs/benchmarks.md ----------------------------------------------------------------------


def _workers(count: int) -> str:
    return "one uvicorn worker" if count == 1 else f"{count} uvicorn worker processes"


@dataclass
class Run:
    """Everything a docs page needs from one run."""

    date: str
    command: str
    duration: int
    connections: int
    threads: int
    patients: int
    workers: int
    results: list[Result]
    baselines: list[Result]
    profile: Profile | None
    machine: list[tuple[str, str]]


_PLACEHOLDER_LIMITS = f"""{LIMITS_HEADING}

Not written yet: run with `--profile` and describe what the figures and the profile show.
"""


SEARCH_HEADING = "## Search"
BUNDLES_HEADING = "## Bundles and bulk loading"
AUTH_HEADING = "## Authentication and audit"
PROFILES_HEADING = "## Profiles and rules"
# Sections other benchmarks write (search.py, bundles.py, auth.py), carried over in order.
KEPT_HEADINGS = (SEARCH_HEADING, BUNDLES_HEADING, AUTH_HEADING, PROFILES_HEADING)


def write_docs(path: Path, run: Run) -> None:
    """Rewrite the REST figures; keep the sections other benchmarks write (search.py's,
    bundles.py's) and the hand-written limits."""
    old = path.read_text() if path.exists() else ""
    limits = _section(old, LIMITS_HEADING) or _PLACEHOLDER_LIMITS
    sections = [_section(old, heading) for heading in KEPT_HEADINGS]
    kept = [section.strip() for section in sections if section] + [limits.strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run).rstrip() + "\n\n" + "\n\n".join(kept) + "\n")


def replace_section(path: Path, heading: str, section: str) -> None:
    """Add or replace the section under ``heading`` (before "What limits it" when new);
    the rest of the page is kept byte for byte."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    text = section.strip() + "\n"
    found = re.search(rf"^{re.escape(heading)}[ \t]*$", old, re.MULTILINE)
    if found is not None:
        after = old.find("\n## ", found.end())
        rest = old[after + 1 :] if after >= 0 else ""
        new = old[: found.start()] + text + ("\n" + rest if rest else "")
    else:
        limits = old.find("\n" + LIMITS_HEADING)
        if limits >= 0:
            new = old[: limits + 1] + text + "\n" + old[limits + 1 :]
        else:
            new = old.rstrip() + "\n\n" + text
    path.write_text(new)


def _section(text: str, heading: str) -> str | None:
    start = text.find("\n" + heading)
    if start < 0:
        return None
    end = text.find("\n## ", start + len(heading) + 1)
    return text[start + 1 : end if end >= 0 else len(text)]


def render(run: Run) -> str:
    by_name = {r.scenario: r for r in run.results}
    out = [
        "# Benchmarks",
        "",
        "How fast the FHIR REST API answers on one machine, measured with one command so that",
        "anyone can repeat it and every change can be compared with the figures below. They",
        "are figures of one run on the machine listed, not a promise for other hardware.",
        "",
        "## How to run",
        "",
        "```sh",
        "python benchmarks/rest.py                 # the three scenarios, 15 s each",
        "python benchmarks/rest.py --baseline      # + the bare FastAPI + SQLite read",
        "python benchmarks/rest.py --profile       # + a py-spy profile of the server under reads",
        "python benchmarks/rest.py --profile create   # ... or under creates (or updates)",
        "python benchmarks/rest.py --baseline --profile --write-docs   # rewrites this page",
        "```",
        "",
        "Needs `wrk` (`apt-get install wrk`); `--profile` needs `py-spy` (`pip install py-spy`).",
        "Other options: `--workers` (of `rofecare serve`, 1), `--duration`, `--connections`,",
        "`--threads`, `--patients`, `--warmup`,",
        "`--port`, `--keep` (keep the temporary data directory). The page is rewritten whole",
        "except the sections `search.py`, `bundles.py`, `auth.py` and",
        '`profile_validation.py` write and the "What limits it" section, which is written by',
        "hand.",
        "",
        "## What is measured",
        "",
        f"- The server is `rofecare serve --workers {run.workers}` ({_workers(run.workers)}),"
        " the embedded SQLite",
        "  store with `synchronous=FULL` (an acknowledged write is on disk), a fresh data",
        "  directory under the system temporary directory. The benchmark starts it, waits for",
        "  `GET /ready`, and stops it with SIGTERM (then SIGKILL) whatever happens.",
        f"- {run.patients:,} Patients are created over HTTP first: identifier with system",
        "  and value, official name, gender, birth date, home address, phone, sometimes e-mail.",
        f"- wrk runs each scenario for {run.duration} s with {run.connections} keep-alive"
        f" connections on {run.threads} threads, after a",
        "  discarded warm-up, replaying pre-built requests (`benchmarks/lua/replay.lua`):",
        "  - **read**: `GET /fhir/Patient/{id}` cycling over the seeded ids;",
        "  - **create**: `POST /fhir/Patient`, each body validated against the R4 schema;",
        "  - **update**: `PUT /fhir/Patient/{id}` with a full body, spread over the seeded ids,",
        "    without `If-Match` (two updates of one id at once are retried by the server).",
        "- Latency is wrk's, per request, from send to last byte. Any non-2xx answer or socket",
        "  error fails the scenario.",
        "- CPU columns are shares of one core over the run (100 % = one core, the machine has",
        "  the CPUs listed below): the server's processes (all threads), their main threads",
        "  (where uvicorn runs the event loops), the kernel part of the server's time, wrk (it",
        "  runs on",
        "  the same machine), and every other program (a high figure there means a noisy run).",
        "- Repeated runs on an otherwise idle machine differ by about 10 %; compare changes",
        "  with several runs, not one.",
        "",
        "## Results",
        "",
        f"Measured {run.date} with `{run.command}`.",
        "",
        *_header("scenario"),
    ]
    for r in run.results:
        out.append(_row(r))
    noisy = [r.scenario for r in [*run.results, *run.baselines] if r.other_cpu > NOISY]
    if noisy:
        out += ["", f"Other programs used the CPU during {', '.join(noisy)}: noisy figures."]
    out += ["", "| target | measured | |", "|---|--:|---|"]
    for label, shown, verdict in target_lines(by_name):
        shown_verdict = verdict if verdict == "met" else f"**{verdict}**"
        out.append(f"| {label} | {shown} | {shown_verdict} |")
    out += ["", "### Compared with a bare FastAPI + SQLite read", ""]
    if not run.baselines:
        out.append("Not measured in this run (add `--baseline`).")
    else:
        out += [
            "`benchmarks/baseline_app.py`: one FastAPI `GET` route, a primary-key `SELECT` with",
            "stdlib `sqlite3` from a file holding the same Patients, bytes returned as stored,",
            "same uvicorn settings, same read scenario. The route is a plain `def`, so FastAPI",
            "runs it in its thread pool (the usual FastAPI pattern for a blocking query). The",
            "second row (`--inline`) runs the query on the event loop thread instead, as",
            "Rofecare's store does for point reads; the gap is what the thread hop costs.",
            "",
            *_header("app"),
            *[_row(r) for r in run.baselines],
        ]
        read = by_name.get("read")
        if read is not None and run.baselines[0].rps:
            share = read.rps / run.baselines[0].rps
            out += ["", f"Rofecare's read runs at {share:.0%} of the bare app's rate."]
    out += ["", "### Machine", ""]
    out += [f"- {name}: {value}" for name, value in run.machine]
    scenario = run.profile.scenario if run.profile else "read"
    out += ["", f"### Profile of the {scenario} scenario", ""]
    if run.profile is None:
        out.append("Not recorded in this run (add `--profile`).")
    else:
        out += [
            "py-spy sampled the server (`--gil`: the thread holding the GIL) during a separate",
            f"{scenario} run ({run.profile.rps:,.0f} requests/s while sampled);"
            f" {run.profile.samples:,} samples, so the GIL was held about"
            f" {run.profile.gil_share:.0%} of the time.",
            "",
            "Own time by package: "
            + ", ".join(
                f"{name} {n / run.profile.samples:.0%}" for name, n in run.profile.packages[:8]
            )
            + ".",
            "",
            "Own time (the function itself), top 12:",
            "",
            "| share | function |",
            "|--:|---|",
        ]
        out += [_profile_row(f, n, run.profile.samples) for f, n in run.profile.own[:12]]
        out += [
            "",
            "Total time (the function and what it calls), Rofecare code, top 12:",
            "",
            "| share | function |",
            "|--:|---|",
        ]
        out += [_profile_row(f, n, run.profile.samples) for f, n in run.profile.total[:12]]
    return "\n".join(out) + "\n"


def markdown_table(results: list[Result]) -> str:
    """The results as the page shows them (``report.table`` is the console's)."""
    return "\n".join([*_header("scenario"), *(_row(r) for r in results)])


def _header(first: str) -> list[str]:
    titles = [first] + [title for title, _ in COLUMNS]
    return ["| " + " | ".join(titles) + " |", "|---|" + "--:|" * len(COLUMNS)]


def _row(r: Result, name: str | None = None) -> str:
    return "| " + " | ".join(cells(r, name)) + " |"


def _profile_row(frame: str, count: int, samples: int) -> str:
    return f"| {count / samples:.1%} | `{frame}` |"
