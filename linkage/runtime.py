"""Process settings for holding a large citizen index in memory.

CPython's cyclic garbage collector runs a young collection every 700 net allocations and a full
one (every object in the heap) after every 100 of those, once the heap has grown by a quarter.
An index of a million records is tens of millions of objects, nearly all long-lived and none in
reference cycles, so the full walks are pure cost: linking 0 -> 100,000 records through the
linker core ran at 5,531 records/s with the defaults, with four full collections of up to 980 ms
each, and at 6,618 records/s with these thresholds, whose longest pause was 21.7 ms (a middle
collection). Raising the first threshold further (100,000) was no faster and lets the middle
collections grow to millions of objects, which showed as a worse p99 end to end. Reference
counting still frees everything at once; only cycles wait longer.

A library must not change this behind its caller's back, so ``linkage`` never calls it; the
worker, the gate, ``caselink link``/``rebuild`` and the benchmarks do.
"""

from __future__ import annotations

import gc

LARGE_INDEX_THRESHOLDS = (10_000, 10, 100)


def tune_gc_for_large_index() -> tuple[int, int, int]:
    """Collect cycles less often; returns the previous thresholds."""
    previous = gc.get_threshold()
    gc.set_threshold(*LARGE_INDEX_THRESHOLDS)
    return previous
