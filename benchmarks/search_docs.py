"""Figures of a search benchmark run as text: the console tables and docs/benchmarks.md.

Why a module of its own: ``docs_page.write_docs`` rewrites the whole page from a REST run
and knows nothing of search, so this one only adds or replaces the page's "## Search"
section and leaves every other section as it is. Console and page show the same columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docs_page import replace_section
from report import Result
from search_data import Dataset

HEADING = "## Search"


@dataclass
class Row:
    """One search scenario: the query, what its first answer held, and the wrk runs."""

    name: str
    path: str
    kind: str  # single, chained, revinclude or sort: decides the target
    expected: int  # matches the loader counted in the data
    expected_included: int = 0  # _revinclude'd resources the loader counted
    matches: int = 0  # search.mode=match entries on the first page
    included: int = 0  # search.mode=include entries on the first page
    total: int | None = None  # Bundle.total, when the server gives it
    loaded: Result | None = None  # wrk with the configured connections
    unloaded: Result | None = None  # wrk with one connection: latency without queueing
    failure: str | None = None


@dataclass
class Paging:
    """Walks from page 1 to page ``pages`` by following ``link[relation=next]``."""

    path: str
    pages: int
    walks: int
    per_page_ms: list[tuple[float, float]] = field(default_factory=list)  # (p50, p95) a page
    to_last_ms: tuple[float, float] = (0.0, 0.0)  # (p50, p95) of the summed page latencies
    pages_per_s: float = 0.0
    failure: str | None = None


@dataclass
class Writes:
    """The REST create scenario with ROFECARE_SEARCH_INDEXING=true and =false, alternating
    (on, off, on, off...) so that a noisy minute weighs on both."""

    indexed: list[Result] = field(default_factory=list)
    unindexed: list[Result] = field(default_factory=list)
    failure: str | None = None
    skipped: bool = False  # --skip-writes: not measured, and not a failure

    @property
    def ratio(self) -> float | None:
        """The mean rate with indexing over the mean rate without."""
        off = sum(result.rps for result in self.unindexed)
        if not self.indexed or not off:
            return None
        return (sum(result.rps for result in self.indexed) / len(self.indexed)) / (
            off / len(self.unindexed)
        )


@dataclass
class SearchRun:
    date: str
    command: str
    duration: int
    connections: int
    threads: int
    workers: int
    latency_connections: int
    dataset: Dataset
    rows: list[Row]
    paging: Paging | None
    writes: Writes
    targets: list[tuple[str, str, str]]  # (target, measured, verdict)
    warnings: list[str]
    machine: list[tuple[str, str]]


def _ms(result: Result | None, metric: str) -> str:
    return "-" if result is None else f"{getattr(result, metric):.2f}"


COLUMNS: list[tuple[str, Callable[[Row], str]]] = [
    ("requests/s", lambda r: "-" if r.loaded is None else f"{r.loaded.rps:,.0f}"),
    ("p50 ms", lambda r: _ms(r.loaded, "p50_ms")),
    ("p95 ms", lambda r: _ms(r.loaded, "p95_ms")),
    ("p99 ms", lambda r: _ms(r.loaded, "p99_ms")),
    ("1 conn p50", lambda r: _ms(r.unloaded, "p50_ms")),
    ("1 conn p95", lambda r: _ms(r.unloaded, "p95_ms")),
    ("on page", lambda r: f"{r.matches}" + (f"+{r.included}" if r.included else "")),
    ("total", lambda r: "-" if r.total is None else f"{r.total:,}"),
    ("expected", lambda r: f"{r.expected:,}"),
    ("errors", lambda r: "-" if r.loaded is None else str(r.loaded.errors)),
    ("server CPU", lambda r: "-" if r.loaded is None else f"{r.loaded.server_cpu:.0%}"),
]


def cells(row: Row) -> list[str]:
    if row.failure is not None:
        return [row.name, "FAILED"] + [""] * (len(COLUMNS) - 1)
    return [row.name] + [cell(row) for _, cell in COLUMNS]


def console_table(rows: list[Row]) -> str:
    lines = [["scenario"] + [title for title, _ in COLUMNS]] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    padded = []
    for line in lines:
        numbers = zip(line[1:], widths[1:], strict=True)
        padded.append("  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]))
    return "\n".join(padded)


def paging_lines(paging: Paging) -> list[str]:
    if paging.failure is not None:
        return [f"paging FAILED: {paging.failure}"]
    p50, p95 = paging.to_last_ms
    lines = [
        f"paging {paging.path}: {paging.walks} walks to page {paging.pages},"
        f" {paging.pages_per_s:,.0f} pages/s on one connection;"
        f" time to page {paging.pages}: p50 {p50:.1f} ms, p95 {p95:.1f} ms",
    ]
    lines += [
        f"  page {n:>2}: p50 {a:.2f} ms, p95 {b:.2f} ms"
        for n, (a, b) in enumerate(paging.per_page_ms, 1)
    ]
    return lines


# -- docs/benchmarks.md ----------------------------------------------------------------------


def write_section(path: Path, run: SearchRun) -> None:
    """Add or replace this section (before "What limits it" when new); the rest of the page
    is kept byte for byte."""
    replace_section(path, HEADING, render(run))


def render(run: SearchRun) -> str:
    data = run.dataset
    code = data.top_code
    counts = ", ".join(f"{t} {n:,}" for t, n in data.counts.items())
    out = [
        HEADING,
        "",
        f"FHIR search at {data.resources:,} resources. Measured {run.date} with",
        f"`{run.command}`.",
        "",
        "```sh",
        "python benchmarks/search.py                # loads 100,000 resources once, then measures",
        "python benchmarks/search.py --write-docs   # ... and rewrites this section",
        "python benchmarks/search_data.py --resources 3000 --data-dir /tmp/small   # data only",
        "```",
        "",
        "Needs `wrk`. The data is cached in `--data-dir` (`/tmp/rofecare-search-bench`) and",
        "loaded again when the request or the search/storage code changed (`--reload` forces it).",
        "Other options: `--workers` (1), `--duration`, `--connections`, `--threads`, `--warmup`,",
        "`--pages`,",
        "`--walks`, `--paging-budget`, `--skip-writes`, `--write-patients`, `--write-rounds`,",
        "`--smith-share`.",
        "",
        "### What is measured",
        "",
        "- Data: the self-contained Synthea bundles (`../shared/data/synthea/selfcontained/`)",
        "  copied with fresh ids (references inside a bundle rewritten to the copy's ids) until",
        f"  {data.requested:,} resources, written in process through `ResourceService.update`",
        "  (validation and search indexing included). Counts: " + counts + ".",
        f"- Load rate {data.load_rate:,.0f} resources/s in process (synchronous="
        f"{data.synchronous}, load only; the server answers queries with its defaults).",
        f"- {data.smith_share:.0%} of patient copies are renamed Smith (3/4) or Smithson (1/4):"
        f" {data.patients_matching_name_prefix:,} patients match `name=smi`.",
        f"- Synthea has no heart-rate Observations (LOINC 8867-4), so the token query uses the"
        f" most common LOINC code, {code['code']} ({code['display']}).",
        f"- `subject` and `_revinclude` use the patient with the most Observations"
        f" ({data.busiest_patient_observations:,}; the median patient has"
        f" {data.median_patient_observations:,}): `_revinclude` answers one Patient and all"
        " its Observations: the heavy end of opening a patient's chart.",
        f"- The server is `rofecare serve --workers {run.workers}` (queries and writes alike).",
        f"- wrk replays each query for {run.duration} s with {run.connections} keep-alive"
        f" connections on {run.threads} threads (as `benchmarks/rest.py`; targets are judged"
        f" on these figures), then with {run.latency_connections or 'no'} connection"
        " (latency without queueing). Before wrk, one answer is checked: status 200, a"
        " Bundle, at least one match; `expected` is what the loader counted in the data.",
        "",
        "### Results",
        "",
        "| " + " | ".join(["scenario", "query"] + [t for t, _ in COLUMNS]) + " |",
        "|---|---|" + "--:|" * len(COLUMNS),
    ]
    for row in run.rows:
        first, *rest = cells(row)
        out.append("| " + " | ".join([first, f"`{row.path}`", *rest]) + " |")
    out += ["", "| target | measured | |", "|---|--:|---|"]
    for label, shown, verdict in run.targets:
        out.append(f"| {label} | {shown} | {verdict if verdict == 'met' else f'**{verdict}**'} |")
    if run.paging is not None:
        out += ["", "### Paging", "", *_paging_markdown(run.paging)]
    out += ["", "### Writes with and without search indexing", ""]
    out += _writes_lines(run.writes)
    if run.warnings:
        out += ["", "### Warnings", "", *[f"- {w}" for w in run.warnings]]
    out += ["", "### Machine", "", *[f"- {name}: {value}" for name, value in run.machine]]
    return "\n".join(out) + "\n"


def _paging_markdown(paging: Paging) -> list[str]:
    if paging.failure is not None:
        return [f"Failed: {paging.failure}"]
    p50, p95 = paging.to_last_ms
    lines = [
        f"`{paging.path}`, then `link[relation=next]` until page {paging.pages}, {paging.walks}",
        f"times on one connection ({paging.pages_per_s:,.0f} pages/s). Time to page"
        f" {paging.pages} (sum of the page latencies): p50 {p50:.1f} ms, p95 {p95:.1f} ms.",
        "",
        "| page | p50 ms | p95 ms |",
        "|--:|--:|--:|",
    ]
    lines += [f"| {n} | {a:.2f} | {b:.2f} |" for n, (a, b) in enumerate(paging.per_page_ms, 1)]
    return lines


def _writes_lines(writes: Writes) -> list[str]:
    if writes.failure is not None:
        return [f"Not measured: {writes.failure}"]
    lines = [
        "`benchmarks/rest.py`'s create scenario (POST a validated Patient), a fresh data dir",
        "per run, with and without indexing in turn:",
    ]
    lines += [""]
    for label, results in (("indexing on", writes.indexed), ("indexing off", writes.unindexed)):
        for result in results:
            lines.append(
                f"- {label}: {result.rps:,.0f} creates/s, p50 {result.p50_ms:.2f} ms,"
                f" p95 {result.p95_ms:.2f} ms, {result.errors} errors"
            )
    if writes.ratio is not None:
        lines += [
            "",
            f"With indexing, writes run at {writes.ratio:.0%} of the rate without (mean rates).",
        ]
    return lines
