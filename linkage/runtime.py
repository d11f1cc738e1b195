"""Process settings for holding a large citizen index in memory.

CPython's cyclic garbage collector runs a collection every 700 net allocations and, every so
often, walks every object in the heap. An index of a million records is tens of millions of
objects, nearly all long-lived and none in reference cycles, so those walks are pure cost:
measured here, raising the first threshold took linking 0 -> 100,000 records from 5,222 to
6,528 records/s (benchmarks/linkage_speed.py reports the effect at 1,000,000). Reference
counting still frees everything at once; only cycles wait longer.

A library must not change this behind its caller's back, so ``linkage`` never calls it; the
worker, the gate, ``caselink link``/``rebuild`` and the benchmarks do.
"""

from __future__ import annotations

import gc

LARGE_INDEX_THRESHOLDS = (100_000, 50, 100)


def tune_gc_for_large_index() -> tuple[int, int, int]:
    """Collect cycles less often; returns the previous thresholds."""
    previous = gc.get_threshold()
    gc.set_threshold(*LARGE_INDEX_THRESHOLDS)
    return previous
