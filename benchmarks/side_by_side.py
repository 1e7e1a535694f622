"""Two commits of the server compared under the same load at the same moment:
``python benchmarks/side_by_side.py HEAD~1 HEAD``.

Why: on this machine (a shared virtual host) the same run gives figures 30-45 % apart an
hour apart, and alternating runs a minute apart still differ by ±15 %, so a change worth
5 % could not be seen by running one commit after the other. Here both commits serve at
once, each ``rofecare serve --workers N`` on its own data directory, and wrk loads both for
the same seconds; whatever slows the host slows both, and they share its cores as any two
CPU-bound processes do, so the one that needs less CPU per request answers more of them.
The figure is the ratio of their requests/s, B over A. Two servers of the same commit gave
0.990 to 1.028 over five rounds (2026-12-04), while their own rates went from 314 to
511/s: a change shows when its rounds stay clear of that band.

Each commit runs from a git worktree of its own (``python -m fhir_server`` from the
worktree imports that tree's package; the installed dependencies are shared), which is
removed afterwards. ``.`` stands for the working tree as it is, uncommitted changes
included. Rounds alternate which server starts first.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import rest
import search
from harness import (
    BenchmarkError,
    Load,
    Scenario,
    Server,
    free_port,
    measure,
    run_in_workdir,
    running,
)
from report import Result

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Side:
    label: str  # as given: a revision or "."
    tree: Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="the reference: a git revision, or . for the working tree")
    parser.add_argument("b", help="the change: a git revision, or . for the working tree")
    parser.add_argument(
        "--scenario", choices=("create", "read", "update"), default="create", help="(create)"
    )
    parser.add_argument(
        "--indexing", choices=("on", "off"), default="on", help="search indexing (on)"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds (4)")
    parser.add_argument("--duration", type=int, default=15, help="seconds per round (15)")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds first (2)")
    parser.add_argument("--connections", type=int, default=8, help="per server (8)")
    parser.add_argument("--workers", type=int, default=2, help="rofecare serve --workers (2)")
    parser.add_argument("--patients", type=int, default=200, help="seeded per server (200)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


def checkout(revision: str, work: Path, name: str) -> Side:
    if revision == ".":
        return Side(revision, ROOT)
    tree = work / name
    git = ["git", "-C", str(ROOT)]
    done = subprocess.run(
        [*git, "worktree", "add", "--detach", str(tree), revision], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise BenchmarkError(f"git worktree add {revision}: {done.stderr.strip()}")
    return Side(revision, tree)


def imported_from(tree: Path) -> Path:
    """Where ``python -m fhir_server`` started in ``tree`` takes its code from."""
    found = subprocess.run(
        [sys.executable, "-c", "import fhir_server; print(fhir_server.__file__)"],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise BenchmarkError(f"fhir_server does not import in {tree}: {found.stderr[-500:]}")
    return Path(found.stdout.strip()).parent.parent


def start(side: Side, args: argparse.Namespace, work: Path, name: str) -> Server:
    port = free_port()
    return Server(
        f"{side.label} ({name})",
        search.serve(port, work / f"{name}-data", args.workers),
        port,
        work / f"{name}.log",
        env={"ROFECARE_SEARCH_INDEXING": "true" if args.indexing == "on" else "false"},
        cwd=side.tree,
    )


def round_of(
    sides: tuple[Side, Side], args: argparse.Namespace, work: Path, number: int
) -> tuple[Result, Result]:
    load = Load(args.duration, args.connections, 2, args.warmup)
    order = (0, 1) if number % 2 == 0 else (1, 0)
    results: dict[int, Result] = {}
    failures: list[BaseException] = []
    with contextlib.ExitStack() as stack:
        ready = []
        for index in order:
            name = f"round{number}-{'ab'[index]}"
            server = stack.enter_context(running(start(sides[index], args, work, name)))
            seeded = rest.seed(server.port, args.patients)
            scenario = next(s for s in rest.scenarios(seeded) if s.name == args.scenario)
            (work / name).mkdir()
            ready.append((index, server, scenario, work / name))

        def run(index: int, server: Server, scenario: Scenario, files: Path) -> None:
            try:
                results[index] = measure(server, scenario, load, files)
            except BaseException as error:  # reported after both threads end
                failures.append(error)

        threads = [threading.Thread(target=run, args=item) for item in ready]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    for index, result in results.items():
        if result.errors:
            raise BenchmarkError(f"{sides[index].label}: {result.error_detail()}")
    return results[0], results[1]


def rate(result: Result) -> float:
    return result.requests / result.duration_s


def run(args: argparse.Namespace, work: Path) -> int:
    sides = (checkout(args.a, work, "tree-a"), checkout(args.b, work, "tree-b"))
    try:
        for side in sides:
            source = imported_from(side.tree)
            if source.resolve() != side.tree.resolve():
                raise BenchmarkError(f"{side.label}: the server would run the code in {source}")
        print(
            f"{args.scenario}, indexing {args.indexing}, {args.workers} workers each, "
            f"{args.rounds} rounds of {args.duration} s; A = {args.a}, B = {args.b}",
            flush=True,
        )
        ratios = []
        for number in range(args.rounds):
            a, b = round_of(sides, args, work, number)
            ratios.append(rate(b) / rate(a))
            print(
                f"round {number + 1}: A {rate(a):,.0f}/s (p95 {a.p95_ms:.1f} ms), "
                f"B {rate(b):,.0f}/s (p95 {b.p95_ms:.1f} ms): B/A {ratios[-1]:.3f}",
                flush=True,
            )
        mean = sum(ratios) / len(ratios)
        print(f"B/A: mean {mean:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}")
    finally:
        for side in sides:
            if side.tree != ROOT:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(side.tree)],
                    capture_output=True,
                )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("rofecare-side-by-side-", args.keep, lambda work: run(args, work))


if __name__ == "__main__":
    sys.exit(main())
