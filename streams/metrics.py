"""Prometheus metrics of the worker, served at /metrics."""

import gc
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class Children:
    """A labelled metric's children by label value, looked up once: ``labels()`` takes a lock and
    builds a key on every call, which showed in the linker's per-message profile."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[str, Any] = {}

    def __call__(self, label: str) -> Any:
        child = self._children.get(label)
        if child is None:
            child = self._children[label] = self.metric.labels(label)
        return child


EVENTS_IN = Counter("caselink_events_in_total", "messages consumed", ["topic"])
EVENTS_OUT = Counter("caselink_events_out_total", "messages produced", ["topic"])
DEAD_LETTERS = Counter("caselink_dead_letters_total", "messages sent to dead letters", ["stage", "error_type"])
DECISIONS = Counter("caselink_link_decisions_total", "linkage decisions", ["outcome"])
LATENCY = Histogram(
    "caselink_end_to_end_seconds", "from the connector emitting an event to its linked case being produced",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
)
INDEX_RECORDS = Gauge("caselink_index_records", "records in the citizen index")
INDEX_CITIZENS = Gauge("caselink_index_citizens", "live citizens in the citizen index")
REVIEW_OPEN = Gauge("caselink_review_open", "possible matches waiting for a person")
SIZE_GUARD = Gauge("caselink_size_guard_refusals", "links held for review because a citizen would have grown past "
                   "linkage.max_citizen_records")
MODEL_FINDINGS = Gauge("caselink_model_check_findings",
                       "ways the model does not fit the linked data (linkage/checks.py)")
GATE_OUTPUT = Counter("caselink_gate_output_total", "views released to or retracted from purpose topics",
                      ["purpose", "action"])
GATE_CONSENTS = Counter("caselink_gate_consents_total", "consent events applied by the gate", ["outcome"])
GATE_CITIZENS = Gauge("caselink_gate_citizens", "citizens the consent gate holds")
GATE_LATENCY = Histogram(
    "caselink_gate_seconds", "from an input reaching the gate's topics to its effect being committed",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
GATE_POLICY_OK = Gauge("caselink_gate_policy_ok", "1 while the consent policy is valid, 0 while the gate is paused")
LINKER_LAG = Gauge("caselink_linker_lag", "link-input messages not yet applied by the linker")
RESOLVER_HELD = Gauge("caselink_resolver_held_changes",
                      "sharded mode: link-input changes the linker holds until every key partition has answered them")
RESOLVER_WAITING = Gauge("caselink_resolver_waiting_seconds",
                         "sharded mode: how long changes have been held with no new answer from the shards")
SHARD_POSITION = Gauge("caselink_shard_position", "link-input offset below which this shard has applied every change",
                       ["tier"])
SHARD_LAG = Gauge("caselink_shard_lag", "link-input messages this shard has not applied yet", ["tier"])
SHARD_PARTITIONS = Gauge("caselink_shard_partitions", "key partitions its consumer group dealt this shard", ["tier"])
SHARD_WAITING = Gauge("caselink_shard_waiting_changes",
                      "changes a record shard holds until every block shard has answered them", ["tier"])
SHARD_REBUILDS = Counter("caselink_shard_rebuilds_total",
                         "times this shard rebuilt its state from the link input (partitions dealt)", ["tier"])
SHARD_ANSWERS = Counter("caselink_shard_answers_total", "answers this shard sent to the next tier", ["tier"])
GC_PAUSE = Histogram(
    "caselink_gc_pause_seconds", "pauses of CPython's cyclic garbage collector, by generation",
    ["generation"], buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)


# Which process exports what: a metric exported where it means nothing reads as a real value (the
# worker's caselink_gate_policy_ok stayed 0 and fired the "policy invalid" page; the gate said
# caselink_index_records 0). Each process keeps only its own (``keep_only``).
LINKER_METRICS = (DECISIONS, LATENCY, INDEX_RECORDS, INDEX_CITIZENS, REVIEW_OPEN, SIZE_GUARD, MODEL_FINDINGS,
                  LINKER_LAG, RESOLVER_HELD, RESOLVER_WAITING)
GATE_METRICS = (GATE_OUTPUT, GATE_CONSENTS, GATE_CITIZENS, GATE_LATENCY, GATE_POLICY_OK)
SHARD_METRICS = (SHARD_POSITION, SHARD_LAG, SHARD_PARTITIONS, SHARD_WAITING, SHARD_REBUILDS, SHARD_ANSWERS)


def keep_only(linker: bool, gate: bool, shard: bool = False) -> None:
    """Unregister the linker's, the gate's or a shard's metrics from this process's registry when
    it does not run that part. Called once by the process's entry point (`caselink worker`,
    `caselink gate`, `caselink shard`)."""
    from prometheus_client import REGISTRY

    for keep, group in ((linker, LINKER_METRICS), (gate, GATE_METRICS), (shard, SHARD_METRICS)):
        if keep:
            continue
        for metric in group:
            try:
                REGISTRY.unregister(metric)
            except KeyError:  # already gone
                pass


_observing_gc = False


def observe_gc_pauses() -> None:
    """Time every collection into GC_PAUSE: a full collection of a large index stops every thread
    and shows as latency, and this is how an operator tells it from a slow broker."""
    global _observing_gc
    if _observing_gc:
        return
    _observing_gc = True
    children = [GC_PAUSE.labels(str(g)) for g in range(3)]
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            children[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
