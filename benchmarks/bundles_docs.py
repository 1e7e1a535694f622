"""Figures of a Bundle and bulk-loading run as text: the console and docs/benchmarks.md.

Why a module of its own: like ``search_docs.py`` for "## Search", this one only adds or
replaces the page's "## Bundles and bulk loading" section and leaves every other section as
it is (``docs_page.write_docs``, run by ``rest.py``, carries this section over). Console and
page show the same columns and the same verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docs_page import replace_section
from report import NOISY

HEADING = "## Bundles and bulk loading"
TARGET_RATE = 2000.0  # issue 4: resources/s with full validation and indexing


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it
    (p50 of two Bundles is the faster one, max is ``share`` 1.0)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Part:
    """One timed part of the run: ``rofecare load``, or one phase of the load over HTTP."""

    name: str
    bundles: int
    resources: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)  # one per POSTed Bundle
    errors: int = 0
    # CPU over the part as a share of one core (1.0 = 100 %): the Rofecare processes (the
    # loader, or the server and its workers), this script (the HTTP clients), the rest.
    rofecare_cpu: float = 0.0
    client_cpu: float | None = None
    other_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0

    def latency_ms(self, share: float) -> float | None:
        return percentile(self.latencies_s, share) * 1e3 if self.latencies_s else None


@dataclass
class Dataset:
    """What was loaded, for the page: files by phase and resources by type."""

    source: str
    phases: list[tuple[str, int, int]]  # (description, bundles, resources)
    counts: dict[str, int]  # resources by type, most first
    patient_entries: tuple[int, int, int]  # min, median, max entries of a patient transaction

    @property
    def bundles(self) -> int:
        return sum(bundles for _, bundles, _ in self.phases)

    @property
    def resources(self) -> int:
        return sum(resources for _, _, resources in self.phases)


@dataclass
class BundlesRun:
    date: str
    command: str
    concurrency: int
    workers: int
    clients: int
    dataset: Dataset
    jobs: list[int]  # rofecare load --jobs, one run each
    loads: list[Part]  # one per --jobs value
    checked: Part  # the most --jobs again, with ROFECARE_PROFILE_VALIDATION=warn
    load_own_rates: list[float]  # the rates ``rofecare load`` printed (from after start-up)
    http: list[Part]  # the phases, then the patient transactions, then the whole load
    patients: Part  # the patient transaction Bundles (conditional/ and selfcontained/)
    targets: list[tuple[str, str, str]]  # (target, measured, verdict)
    warnings: list[str]
    machine: list[tuple[str, str]]


def targets(loads: list[Part], http: Part) -> list[tuple[str, str, str]]:
    """Issue 4: >= 2,000 resources/s with full validation and indexing, both ways (the
    loader's fastest run)."""
    lines = []
    load = max(loads, key=lambda part: part.rate)
    for label, part in ((load.name, load), ("Bundles over HTTP", http)):
        verdict = "met" if part.rate >= TARGET_RATE else "NOT MET"
        lines.append((f"{label} >= {TARGET_RATE:,.0f} resources/s", f"{part.rate:,.0f}/s", verdict))
    return lines


def noisy(parts: list[Part]) -> list[str]:
    return [part.name for part in parts if part.other_cpu > NOISY]


# -- the table -----------------------------------------------------------------------------------


def _ms(part: Part, share: float) -> str:
    value = part.latency_ms(share)
    return "-" if value is None else f"{value:,.0f}"


COLUMNS: list[tuple[str, Callable[[Part], str]]] = [
    ("bundles", lambda p: f"{p.bundles:,}"),
    ("resources", lambda p: f"{p.resources:,}"),
    ("seconds", lambda p: f"{p.seconds:.1f}"),
    ("resources/s", lambda p: f"{p.rate:,.0f}"),
    ("p50 ms", lambda p: _ms(p, 0.5)),
    ("p95 ms", lambda p: _ms(p, 0.95)),
    ("max ms", lambda p: _ms(p, 1.0)),
    ("errors", lambda p: str(p.errors)),
    ("Rofecare CPU", lambda p: f"{p.rofecare_cpu:.0%}"),
    ("client CPU", lambda p: "-" if p.client_cpu is None else f"{p.client_cpu:.0%}"),
    ("other CPU", lambda p: f"{p.other_cpu:.0%}"),
]


def cells(part: Part) -> list[str]:
    return [part.name] + [cell(part) for _, cell in COLUMNS]


def console_table(parts: list[Part]) -> str:
    lines = [["part"] + [title for title, _ in COLUMNS]] + [cells(p) for p in parts]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    padded = []
    for line in lines:
        numbers = zip(line[1:], widths[1:], strict=True)
        padded.append("  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]))
    return "\n".join(padded)


def latencies(part: Part) -> str:
    return f"p50 {_ms(part, 0.5)} ms, p95 {_ms(part, 0.95)} ms, max {_ms(part, 1.0)} ms"


# -- docs/benchmarks.md --------------------------------------------------------------------------


def write_section(path: Path, run: BundlesRun) -> None:
    """Add or replace this section (before "What limits it" when new); the rest of the page
    is kept byte for byte."""
    replace_section(path, HEADING, render(run))


def render(run: BundlesRun) -> str:
    data = run.dataset
    smallest, median, largest = data.patient_entries
    phases = "; ".join(f"{name}: {bundles} ({n:,} resources)" for name, bundles, n in data.phases)
    counts = ", ".join(f"{kind} {n:,}" for kind, n in data.counts.items())
    own_rates = ", ".join(
        f"{rate:,.0f}/s with --jobs {jobs}"
        for jobs, rate in zip(run.jobs, run.load_own_rates, strict=True)
    )
    out = [
        HEADING,
        "",
        f"Loading all of `{data.source}` ({data.bundles} Bundles, {data.resources:,} resources)"
        " into a fresh store,",
        f"two ways. Measured {run.date} with `{run.command}`.",
        "",
        "```sh",
        "python benchmarks/bundles.py                # rofecare load, then the Bundles over HTTP",
        "python benchmarks/bundles.py --workers 2    # ... to rofecare serve --workers 2",
        "python benchmarks/bundles.py --write-docs   # ... and rewrites this section",
        "```",
        "",
        "Options: `--jobs` (of `rofecare load`, a run each: 1,2), `--concurrency` (of"
        " `rofecare load`, 4),",
        "`--workers` (of `rofecare serve`, 1),",
        "`--clients` (concurrent HTTP clients, 4), `--source`, `--timeout` (seconds per POST),",
        "`--load-timeout`, `--port`, `--keep` (keep the temporary data directories).",
        "",
        "### What is measured",
        "",
        f"- Data: {phases}. A patient transaction holds {median:,} entries (median;"
        f" {smallest:,} to {largest:,}). Resources: {counts}.",
        "- Both ways write to a fresh data directory with the server's defaults: SQLite with"
        " `synchronous=FULL`, every resource validated against the R4 schema and indexed for"
        " search (`ROFECARE_SEARCH_INDEXING=true`); the Rofecare profiles and hospital rules"
        " off (`ROFECARE_PROFILE_VALIDATION=off`: Synthea is not the hospital's data).",
        f"- **`rofecare load`**: `rofecare load {data.source} --data-dir DIR --concurrency"
        f" {run.concurrency} --jobs J` as a subprocess, once for each J in"
        f" {', '.join(map(str, run.jobs))} (`--jobs 1` runs the Bundles in the loader's own"
        " process, `--jobs 2` in it and in one worker process): resources/s is the resources its"
        " summary counts over the wall time of the command (start-up included; its own"
        f" figures, timed from the start of loading, were {own_rates}). It must exit 0 with 0"
        " failed.",
        f"- Then once more with `--jobs {max(run.jobs)}` and"
        " `ROFECARE_PROFILE_VALIDATION=warn`: every Rofecare profile and hospital rule checked"
        " as well, none refusing (Synthea is not the hospital's data: with `enforce` its"
        " patients are refused, see docs/api.md); its report lists what breaks them. What"
        " checking them costs a load; not a target row.",
        f"- **Bundles over HTTP**: `rofecare serve --workers {run.workers}`, started and"
        " ready before the clock starts; each Bundle is one `POST /fhir` on its own"
        " connection. The prerequisite `batch` Bundles go first, together (they name"
        " nothing of each other), then the"
        f" `conditional/` patient transactions with {run.clients} concurrent clients, then"
        " `selfcontained/` (they create the same hospitals again with plain POSTs; loaded"
        " earlier, they would make the conditional references ambiguous, 412). Resources/s"
        " is every entry over the time from the first POST to the last answer. Latency is"
        " the client's, from sending a Bundle to the last byte of its answer.",
        "- An answer must be 200, a `batch-response` or `transaction-response` Bundle with one"
        " entry per entry sent and every `response.status` 2xx, else the run fails; after the"
        " load, `GET /fhir/{type}?_summary=count` must give the counts of the files.",
        "- CPU columns are shares of one core (100 % = one core; the machine's CPUs are listed"
        " below): the loader process or the server's processes, this script (the HTTP"
        " clients: reading the answers), and every other program (a high figure there means"
        " a noisy run).",
        "",
        "### Results",
        "",
        "| part | " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|---|" + "--:|" * len(COLUMNS),
        *["| " + " | ".join(cells(part)) + " |" for part in [*run.loads, run.checked, *run.http]],
        "",
        f"A typical Synthea patient transaction ({median:,} entries, {run.patients.bundles}"
        f" Bundles): {latencies(run.patients)}.",
    ]
    loud = noisy([*run.loads, run.checked, *run.http])
    if loud:
        out += ["", f"Other programs used the CPU during {', '.join(loud)}: noisy figures."]
    out += ["", "| target (full validation and indexing) | measured | |", "|---|--:|---|"]
    for label, shown, verdict in run.targets:
        out.append(f"| {label} | {shown} | {verdict if verdict == 'met' else f'**{verdict}**'} |")
    if run.warnings:
        out += ["", "### Warnings", "", *[f"- {w}" for w in run.warnings]]
    out += ["", "### Machine", "", *[f"- {name}: {value}" for name, value in run.machine]]
    return "\n".join(out) + "\n"
