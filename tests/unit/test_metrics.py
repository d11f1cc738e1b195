"""Worker metrics that are not counted by the code paths they describe."""

import gc

from caselink.streams.metrics import GC_PAUSE, observe_gc_pauses


def _count(generation: str) -> float:
    for family in GC_PAUSE.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("generation") == generation:
                return sample.value
    return 0.0


def test_every_collection_is_timed_once_by_generation() -> None:
    observe_gc_pauses()
    observe_gc_pauses()  # a second call must not time each collection twice
    was_enabled = gc.isenabled()
    gc.disable()  # only the two collections below, none triggered by allocation
    try:
        before = {g: _count(g) for g in "012"}
        gc.collect(0)
        gc.collect(2)
        assert _count("0") == before["0"] + 1
        assert _count("1") == before["1"]
        assert _count("2") == before["2"] + 1
    finally:
        if was_enabled:
            gc.enable()
