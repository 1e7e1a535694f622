"""Figures of a benchmark run: results, targets, the console table, the folded profile.

Why a separate module: the harness produces numbers and this module only turns them into
text, so the terminal (here) and docs/benchmarks.md (docs_page.py) show the same columns
and the same verdicts on the targets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

# (name, extra arguments of benchmarks/baseline_app.py); the first is "the" baseline
BASELINES = [
    ("bare FastAPI + SQLite read", []),
    ("same, query on the event loop", ["--inline"]),
]
NOISY = 0.25  # other programs' CPU (share of a core) above which a run's figures are noisy


@dataclass
class Result:
    """One wrk run, parsed from the WRK_RESULT line of benchmarks/lua/replay.lua."""

    scenario: str
    requests: int
    duration_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    socket_errors: dict[str, int]
    statuses: dict[str, int]
    # CPU over the run as a share of one core (1.0 = 100 %): the server process, its main
    # thread (the event loop), the kernel part of the process, wrk, and everything else on
    # the machine (other programs make the figures noisy).
    server_cpu: float
    loop_cpu: float
    server_sys: float
    wrk_cpu: float
    other_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not code.startswith("2"))

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def error_detail(self) -> str:
        parts = [f"HTTP {code}: {n}" for code, n in sorted(self.statuses.items()) if code[0] != "2"]
        parts += [f"{kind}: {n}" for kind, n in self.socket_errors.items() if n]
        return ", ".join(parts)


@dataclass(frozen=True)
class Target:
    """A figure the project wants, e.g. read >= 5,000 requests/s."""

    label: str
    scenario: str
    metric: str  # "rps" or "p95_ms"
    threshold: float

    def measured(self, results: dict[str, Result]) -> float | None:
        result = results.get(self.scenario)
        return None if result is None else float(getattr(result, self.metric))

    def met(self, results: dict[str, Result]) -> bool | None:
        value = self.measured(results)
        if value is None:
            return None
        return value >= self.threshold if self.metric == "rps" else value < self.threshold


TARGETS = [
    Target("read >= 5,000 requests/s", "read", "rps", 5000),
    Target("create (validated Patient) >= 1,000 requests/s", "create", "rps", 1000),
    Target("read p95 < 5 ms", "read", "p95_ms", 5.0),
]


@dataclass
class Profile:
    """py-spy samples of the server, folded into the functions that cost the most."""

    samples: int
    own: list[tuple[str, int]]  # time in the function itself
    total: list[tuple[str, int]]  # time in the function and what it calls (project code)
    packages: list[tuple[str, int]]  # own time summed by top-level package
    scenario: str = "read"
    rps: float = 0.0
    gil_share: float = 0.0  # samples / (rate x seconds): how busy the GIL was


# -- console -------------------------------------------------------------------------------


COLUMNS: list[tuple[str, Callable[[Result], str]]] = [
    ("requests/s", lambda r: f"{r.rps:,.0f}"),
    ("p50 ms", lambda r: f"{r.p50_ms:.2f}"),
    ("p95 ms", lambda r: f"{r.p95_ms:.2f}"),
    ("p99 ms", lambda r: f"{r.p99_ms:.2f}"),
    ("errors", lambda r: str(r.errors)),
    ("server CPU", lambda r: f"{r.server_cpu:.0%}"),
    ("event loop", lambda r: f"{r.loop_cpu:.0%}"),
    ("kernel", lambda r: f"{r.server_sys:.0%}"),
    ("wrk CPU", lambda r: f"{r.wrk_cpu:.0%}"),
    ("other CPU", lambda r: f"{r.other_cpu:.0%}"),
]


def cells(r: Result, name: str | None = None) -> list[str]:
    return [name or r.scenario] + [cell(r) for _, cell in COLUMNS]


def table(results: list[Result]) -> str:
    rows = [["scenario"] + [title for title, _ in COLUMNS]]
    rows += [cells(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        numbers = zip(row[1:], widths[1:], strict=True)
        padded = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in numbers]
        lines.append("  ".join(padded))
    return "\n".join(lines)


def target_lines(results: dict[str, Result]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each target."""
    lines = []
    for target in TARGETS:
        value = target.measured(results)
        met = target.met(results)
        shown = "-" if value is None else _metric(target.metric, value)
        verdict = "not measured" if met is None else ("met" if met else "NOT MET")
        lines.append((target.label, shown, verdict))
    return lines


def _metric(metric: str, value: float) -> str:
    return f"{value:,.0f}/s" if metric == "rps" else f"{value:.2f} ms"


def profile_text(profile: Profile, limit: int = 12) -> str:
    lines = [
        f"py-spy: {profile.samples} samples of the thread holding the GIL"
        f" (GIL held ~{profile.gil_share:.0%} of the time;"
        f" {profile.scenario} at {profile.rps:,.0f} requests/s)"
    ]
    packages = ", ".join(f"{p} {n / profile.samples:.0%}" for p, n in profile.packages[:8])
    lines.append(f"  own time by package: {packages}")
    lines.append("  own time (the function itself):")
    lines += [f"    {n / profile.samples:6.1%}  {frame}" for frame, n in profile.own[:limit]]
    lines.append("  total time (with callees), Rofecare code:")
    lines += [f"    {n / profile.samples:6.1%}  {frame}" for frame, n in profile.total[:limit]]
    return "\n".join(lines)


# -- py-spy --------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def fold_profile(raw: str, project_marker: str = "fhir_server/") -> Profile:
    """Fold py-spy's ``--format raw`` output (``frame;frame;... count``) by function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            if project_marker in frame and "/cli.py" not in frame:  # cli.py: always 100 %
                total[frame] += count
    return Profile(samples, own.most_common(), total.most_common(), packages.most_common())


def _package(frame: str) -> str:
    """``send (uvicorn/protocols/http/httptools_impl.py)`` -> ``uvicorn``."""
    path = frame.rpartition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    return top.removesuffix(".py") if top else "?"


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"
