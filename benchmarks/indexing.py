"""Cost of extracting search index entries at write time: ``python benchmarks/indexing.py``.

Why: every create and update will index its resource (issue 3), so indexing must stay a
small share of a write (~0.9 ms for a validated create over HTTP here). This runs the
indexer over every resource of the shared Synthea bundles, in process, and prints
resources/s and per-resource p50/p95/p99, overall and for the busiest types.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from fhir_server.search.indexer import Indexer
from fhir_server.search.registry import load_search_parameters

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "synthea"


def synthea_resources(folder: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(folder.rglob("*.json")):
        bundle = json.loads(path.read_text())
        if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle":  # not manifests
            found += [entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry]
    return found


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of bundles")
    args = parser.parse_args()
    started = time.perf_counter()
    indexer = Indexer(load_search_parameters())
    print(f"search parameters loaded and compiled in {time.perf_counter() - started:.2f} s")
    resources = synthea_resources(args.data)
    timings: dict[str, list[float]] = defaultdict(list)
    entries = 0
    began = time.perf_counter()
    for resource in resources:
        tick = time.perf_counter()
        entries += len(indexer.entries(resource))
        timings[resource["resourceType"]].append(time.perf_counter() - tick)
    elapsed = time.perf_counter() - began
    everything = [t for values in timings.values() for t in values]
    print(
        f"{len(resources):,} resources, {entries:,} index entries: "
        f"{len(resources) / elapsed:,.0f} resources/s, "
        f"p50 {statistics.median(everything) * 1e3:.3f} ms, "
        f"p95 {_percentile(everything, 0.95) * 1e3:.3f} ms, "
        f"p99 {_percentile(everything, 0.99) * 1e3:.3f} ms"
    )
    busiest = sorted(timings.items(), key=lambda item: -sum(item[1]))[:6]
    for resource_type, values in busiest:
        print(
            f"  {resource_type:<22} {len(values):>6,}  p50 {statistics.median(values) * 1e3:.3f} ms"
            f"  p95 {_percentile(values, 0.95) * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()
