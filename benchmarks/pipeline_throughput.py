"""End-to-end throughput and latency of the streaming pipeline on a real single-node broker.

    python benchmarks/pipeline_throughput.py [--preload 100000] [--burst 50000] [--events 20000] [--rate 1000]

1. Ceiling: a bare confluent-kafka consume -> produce loop that does no work, on the same messages.
2. Throughput: --preload synthetic PersonEvents go through one worker (normalise + link) from a
   standing start; records/s from first input to the last linked case, measured from broker
   timestamps.
3. Sustained throughput into the loaded index (what the issue's target is stated for): with the
   --preload records in the index, --burst further events are published at once; events/s from
   the first to the last of their link decisions, and from the start of publishing to the last.
4. Latency: with the index preloaded, --events further events are published at a steady --rate;
   latency is the linked case's broker timestamp minus the source event's broker timestamp
   (the link decision for each record names its input), p50/p99.
Starts and stops its own broker and worker. Results: benchmarks/results/pipeline_throughput.json.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caselink.infra.topics import LINK_DECISIONS_TOPIC, LINKED_CASES_TOPIC, person_events_topic
from caselink.linkage.synthetic import records_for_size
from caselink.schemas import default_serde
from common import local_broker, percentile, save
from confluent_kafka import Consumer, Producer

from caselink.core.kafka import admin_client, read_to_end
from caselink.core.settings import Settings
from caselink.demo import start_worker, wait_for_worker, wait_until_quiet


def encode_events(items: list[dict], start: int = 0) -> list[tuple[str, bytes, bytes]]:
    serde = default_serde()
    now = datetime.now(UTC)
    out = []
    for i, item in enumerate(items, start=start):
        key = f"{item['agency']}:{item['source_record_id']}"
        out.append((person_events_topic(item["agency"]), key.encode(), serde.encode("PersonEvent", {
            "event_id": f"bench-{i}", "agency": item["agency"], "source_record_id": item["source_record_id"],
            "source_version": 1, "op": "UPSERT", "occurred_at": now, "emitted_at": now, "person": item["person"],
            "cases": [], "source": {}})))
    return out


def publish(bootstrap: str, events: list[tuple[str, bytes, bytes]], rate: float | None = None) -> dict[bytes, float]:
    """Produce events (optionally paced); returns key -> send time."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2 if rate else 20, "acks": "all",
                         "enable.idempotence": True, "compression.type": "lz4"})
    sent = {}
    started = time.perf_counter()
    for i, (topic, key, value) in enumerate(events):
        if rate:
            target = started + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        sent[key] = time.time()
        producer.poll(0)
    producer.flush(120)
    return sent


def ceiling(bootstrap: str, topics: list[str], n: int) -> float:
    """Messages/s of a consume -> produce loop doing nothing else."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ceiling-{time.time()}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all", "enable.idempotence": True,
                  "compression.type": "lz4"})
    c.subscribe(topics)
    got = 0
    started = None
    while got < n:
        batch = c.consume(1000, timeout=1.0)
        for msg in batch:
            if msg.error():
                continue
            if started is None:
                started = time.perf_counter()
            while True:
                try:
                    p.produce("bench.ceiling", msg.value(), key=msg.key())
                    break
                except BufferError:
                    p.poll(0.05)
            got += 1
        p.poll(0)
    p.flush(60)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    c.close()
    return got / elapsed


def input_to_output_latencies(settings: Settings, keys: set[bytes], sent: dict[bytes, float]) -> list[float]:
    """Per record: time its linked case reached the broker minus when the source event was sent."""
    serde = default_serde()
    decided: dict[str, float] = {}
    for msg in read_to_end(settings, [LINK_DECISIONS_TOPIC]):
        if msg.key() in keys:
            serde.decode(msg.value(), expect="LinkDecision")  # must be one
            decided.setdefault(msg.key().decode(), msg.timestamp()[1] / 1000)
    return [decided[k.decode()] - sent[k] for k in keys if k.decode() in decided]


def _cpu_seconds(proc: Any) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def broker_cpu(directory: Path) -> float:
    """CPU seconds so far of the broker started under ``directory`` (found by its command line)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        command = " ".join(proc.info["cmdline"] or ())
        if "kafka.Kafka" in command and str(directory) in command:
            total += _cpu_seconds(proc)
    return total


def worker_cpu(worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of the worker process and of its normaliser processes."""
    import psutil

    worker = psutil.Process(worker_pid)
    children = worker.children(recursive=True)
    return {"worker": _cpu_seconds(worker), "normalisers": sum(_cpu_seconds(c) for c in children)}


def gc_pauses(port: int) -> dict[str, dict[str, float]]:
    """The worker's garbage-collection pauses so far, by generation: count, total and the bucket
    the longest fell in (from its /metrics)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "caselink_gc_pause_seconds":
            continue
        buckets: dict[str, list[tuple[float, float]]] = {}
        for sample in family.samples:
            gen = sample.labels.get("generation", "")
            row = out.setdefault(gen, {"count": 0.0, "total_s": 0.0, "longest_at_most_s": 0.0})
            if sample.name.endswith("_count"):
                row["count"] = sample.value
            elif sample.name.endswith("_sum"):
                row["total_s"] = sample.value
            elif sample.name.endswith("_bucket"):
                buckets.setdefault(gen, []).append((float(sample.labels["le"]), sample.value))
        for gen, rows in buckets.items():
            rows.sort()
            total = out[gen]["count"]
            out[gen]["longest_at_most_s"] = next((le for le, n in rows if n >= total), float("inf"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    results: dict[str, Any] = {"preload": args.preload, "burst": args.burst, "latency_events": args.events,
                               "rate": args.rate}
    with local_broker() as (settings, directory):
        run(settings, directory, args, results)
    print(f"saved {save('pipeline_throughput', results)}")


def run(settings: Any, directory: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    worker = None
    try:
        admin = admin_client(settings)
        from confluent_kafka.admin import NewTopic
        for f in admin.create_topics([NewTopic("bench.ceiling", 1, 1)]).values():
            f.result()
        items = records_for_size(args.preload + args.burst + args.events, seed=31)
        preload = encode_events(items[: args.preload])
        print(f"publishing {len(preload):,} events ...", flush=True)
        publish(bootstrap, preload)
        topics = [person_events_topic(a) for a in settings.agencies]
        results["ceiling_msgs_per_s"] = ceiling(bootstrap, topics, len(preload))
        print(f"ceiling (confluent-kafka consume->produce, no work): {results['ceiling_msgs_per_s']:,.0f} msgs/s",
              flush=True)

        broker_before = broker_cpu(directory)
        worker = start_worker(settings, data_dir=directory / "worker")
        started = time.perf_counter()
        wait_for_worker(worker, len(preload), timeout=3600)
        wait_until_quiet(settings, [LINKED_CASES_TOPIC])
        elapsed = time.perf_counter() - started
        cpu = {**worker_cpu(worker.proc.pid), "broker": broker_cpu(directory) - broker_before}
        # Where the two cores went: CPU microseconds per event, by process (worker start-up included).
        results["cpu_us_per_event"] = {k: v / len(preload) * 1e6 for k, v in cpu.items()}
        results["cpu_cores_busy"] = {k: v / elapsed for k, v in cpu.items()}
        results["throughput_events_per_s"] = len(preload) / elapsed
        results["throughput_ratio_to_ceiling"] = results["throughput_events_per_s"] / results["ceiling_msgs_per_s"]
        print(f"end to end, {len(preload):,} events into an empty index: {results['throughput_events_per_s']:,.0f} "
              f"events/s ({results['throughput_ratio_to_ceiling']:.1%} of the ceiling; includes worker start-up)",
              flush=True)
        stamps = sorted(m.timestamp()[1] for m in read_to_end(settings, [LINK_DECISIONS_TOPIC]))
        steady = len(stamps) / max((stamps[-1] - stamps[0]) / 1000, 1e-9)
        results["steady_events_per_s"] = steady
        results["steady_ratio_to_ceiling"] = steady / results["ceiling_msgs_per_s"]
        print(f"  once running (first to last link decision): {steady:,.0f} events/s "
              f"({results['steady_ratio_to_ceiling']:.1%} of the ceiling)", flush=True)
        print("  CPU per event: " + ", ".join(f"{k} {v:,.0f} µs ({results['cpu_cores_busy'][k]:.2f} cores)"
                                          for k, v in results["cpu_us_per_event"].items()), flush=True)

        burst = encode_events(items[args.preload:args.preload + args.burst], start=args.preload)
        print(f"publishing {len(burst):,} events at once into the index of {len(preload):,} records ...",
              flush=True)
        burst_started = time.time()
        publish(bootstrap, burst)
        wait_for_worker(worker, len(preload) + len(burst), timeout=3600)
        wait_until_quiet(settings, [LINKED_CASES_TOPIC])
        keys = {k for _, k, _ in burst}
        stamps = sorted(m.timestamp()[1] / 1000 for m in read_to_end(settings, [LINK_DECISIONS_TOPIC])
                        if m.key() in keys)
        results["loaded_index_events_per_s"] = len(stamps) / max(stamps[-1] - stamps[0], 1e-9)
        results["loaded_index_ratio_to_ceiling"] = results["loaded_index_events_per_s"] / results["ceiling_msgs_per_s"]
        results["loaded_index_from_publish_events_per_s"] = len(stamps) / max(stamps[-1] - burst_started, 1e-9)
        print(f"sustained, {len(stamps):,} events into the loaded index: {results['loaded_index_events_per_s']:,.0f} "
              f"events/s first to last decision ({results['loaded_index_ratio_to_ceiling']:.1%} of the ceiling); "
              f"{results['loaded_index_from_publish_events_per_s']:,.0f} events/s from the start of publishing",
              flush=True)

        steady = encode_events(items[args.preload + args.burst:], start=args.preload + args.burst)
        print(f"publishing {len(steady):,} events at {args.rate:,.0f}/s into the loaded index ...", flush=True)
        sent = publish(bootstrap, steady, rate=args.rate)
        wait_for_worker(worker, len(preload) + len(burst) + len(steady), timeout=600)
        wait_until_quiet(settings, [LINK_DECISIONS_TOPIC])
        lat = input_to_output_latencies(settings, {k for _, k, _ in steady}, sent)
        results["latency_ms"] = {"count": len(lat), "p50": percentile(lat, 50) * 1000,
                                 "p99": percentile(lat, 99) * 1000, "max": max(lat) * 1000}
        print(f"latency publish -> link decision at {args.rate:,.0f}/s: p50 {results['latency_ms']['p50']:.1f} ms, "
              f"p99 {results['latency_ms']['p99']:.1f} ms ({len(lat):,} events)", flush=True)
        results["gc_pauses"] = gc_pauses(worker.port)
        print("  worker GC pauses over the whole run: " + ", ".join(
            f"gen{g} x{int(v['count'])} total {v['total_s'] * 1000:.0f} ms, "
            f"longest <= {v['longest_at_most_s'] * 1000:.0f} ms"
            for g, v in sorted(results["gc_pauses"].items())), flush=True)
        results["worker_health"] = worker.health()
    finally:
        if worker:
            worker.stop()


if __name__ == "__main__":
    main()
