"""What a process builds at start-up lives as long as it: keep it out of the collector.

Why: the R4 schema, the search parameters with their compiled paths, the profiles, the
terminology (ICD-10), the definitions are millions of objects. Python's cyclic collector
walks every tracked object at each full collection, and a process writing resources
allocates fast enough to run one every second or two: ~0.2 s each, in which nothing else
runs. ``gc.freeze()`` moves everything tracked so far to a generation the collector never
walks. ``rofecare load`` of the Synthea sample (``--jobs 2``) went from 9.1-12.0 s to
7.4-8.7 s, three runs each alternated (docs/benchmarks.md); the server froze after start-up
already, as it stalled requests for tens of ms.

Nothing needs releasing: what is frozen stays reachable until the process ends, and the
garbage among it (cycles left by the start-up) is a few objects, not worth a full pass.

A loader also keeps whole Bundles in flight (a Synthea patient's is ~100,000 objects, and
each entry's copies more), and with the default thresholds (700, 10, 10) the collector
walked them in ~2,300 young, ~210 middle and ~18 full passes per Synthea load: 1.5 s of
the loading process's CPU. Collecting young objects every 10,000 allocations rather than
700, and the rest rarely, left 0.5 s (one run each, gc.callbacks timing). The server keeps
the defaults: with these thresholds its creates ran no faster side by side (B/A mean 1.001),
and a young pass over 10,000 objects (~3.4 ms in the loader) could show in its latency.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Call once the process has built everything it keeps, before it starts working."""
    gc.freeze()


BULK_THRESHOLDS = (10_000, 50, 100)


def collect_seldom() -> None:
    """For a process that works through Bundles in bulk (``rofecare load`` and its workers)."""
    gc.set_threshold(*BULK_THRESHOLDS)
