"""The sharded index's tiers on Kafka, end to end, beside the single writer and the consume->produce
ceiling, in the same run (issue 20).

    python benchmarks/scale_out_kafka.py [--records 100000] [--shards 1 2]

The link input is filled once per broker with ``--records`` synthetic records as the normaliser
writes them (each PersonEvent with its packed record), then each of these catches up on it from
the start, timed from its first read to its last change applied:

* ``ceiling``: a bare consume -> produce loop over the link input, doing no work;
* ``single``: the single writer's index (``CitizenIndex``) applying every change as read from Kafka,
  in a process of its own;
* ``sharded n``: n block shards and n record shards (``caselink shard``, processes), and a resolver
  (``CitizenIndex(resolver=True)``, a process of its own) applying every change with the record
  shards' merged answers, as read from Kafka. Timed from the shards' start (they must first be
  dealt partitions by their consumer group) to the resolver's last change; the group's start-up
  is reported apart.

Neither of those publishes outputs: they compare the index's work and the tiers' Kafka hops. Then
the worker as deployed, publishing every decision and linked case (``caselink worker``, snapshots
off), on a fresh broker with the same link input, catching up on it from the start:

* ``worker single``: the default single writer;
* ``worker sharded n``: ``shards.enabled`` (the worker's linker is the ordered resolver, keeping the
  records' values in its SQLite store) beside n block shards and n record shards.

A worker's rate is its events over the time from the first to the last link decision (broker
timestamps, as ``pipeline_throughput.py`` measures it), so a process's and a group's start-up are
left out and reported apart; the worker's resident memory is taken once it has caught up. Each
sharded run gets a fresh broker, so its answer topics start empty. CPU seconds per process are
from /proc. Results: benchmarks/results/scale_out_kafka.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import time
from typing import Any

import psutil
from common import local_broker, save
from pipeline_throughput import broker_cpu, ceiling

LINK_BATCH = 5_000


def fill_link_input(bootstrap: str, n: int) -> int:
    """``n`` synthetic records on the link input, each with the normaliser's packed record."""
    from datetime import UTC, datetime

    from caselink.infra.topics import LINK_INPUT_TOPIC
    from caselink.linkage.blocking import blocking_keys
    from caselink.linkage.models import default_model
    from caselink.linkage.packed import pack
    from caselink.linkage.record import UnlinkableRecordError, standardise_person
    from caselink.linkage.synthetic import records_for_size
    from caselink.schemas import default_serde
    from caselink.streams.normaliser_core import CHANGE_HEADER, PACKED_HEADER
    from confluent_kafka import Producer

    rules = default_model().rules
    serde = default_serde()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all", "enable.idempotence": True,
                         "compression.type": "lz4"})
    now = datetime.now(UTC)
    sent = 0
    for i, item in enumerate(records_for_size(n, seed=41)):
        key = f"{item['agency']}:{item['source_record_id']}"
        try:
            record = standardise_person(key, item["person"], rules)
        except UnlinkableRecordError:
            continue  # the normaliser dead-letters these
        value = serde.encode("PersonEvent", {
            "event_id": f"bench-{i}", "agency": item["agency"], "source_record_id": item["source_record_id"],
            "source_version": 1, "op": "UPSERT", "occurred_at": now, "emitted_at": now, "person": item["person"],
            "cases": [], "source": {}})
        headers = [(CHANGE_HEADER, b"UPSERT 1"),
                   (PACKED_HEADER, pack(record, blocking_keys(record, rules.typo_schemes), rules))]
        while True:
            try:
                producer.produce(LINK_INPUT_TOPIC, value, key=key.encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
    assert producer.flush(120) == 0
    return sent


def _apply_all(settings: Any, total: int, sharded: bool, out: Any) -> None:
    """In a child: the single writer, or the resolver reading the record shards' answers too."""
    from caselink.infra.topics import LINK_INPUT_TOPIC, LINK_SCORED_TOPIC
    from caselink.linkage.index import CitizenIndex
    from caselink.linkage.models import default_model
    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.schemas import default_serde
    from caselink.streams.normaliser_core import change_header, packed_record
    from caselink.streams.shard_core import Leave, ResolverFeed, Upsert, decode_change
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from caselink.core.kafka import consumer

    tune_gc_for_large_index()
    model = default_model()
    serde = default_serde()
    index = CitizenIndex(model, resolver=sharded)
    feed = ResolverFeed(index, serde, settings.shards.partitions)
    reader = consumer(settings, f"bench-{'resolver' if sharded else 'single'}", **{"enable.partition.eof": False})
    tps = [TopicPartition(LINK_INPUT_TOPIC, 0, OFFSET_BEGINNING)]
    if sharded:
        tps.append(TopicPartition(LINK_SCORED_TOPIC, 0, OFFSET_BEGINNING))
    reader.assign(tps)
    applied = 0
    started = None
    while applied < total:
        for msg in reader.consume(LINK_BATCH, timeout=0.2):
            if started is None:
                started = time.perf_counter()
            if msg.topic() == LINK_SCORED_TOPIC:
                feed.answers(msg.value())
            elif sharded:
                feed.change(msg)
            else:
                headers = msg.headers()
                change = decode_change(serde, model.rules, msg.value(), packed_record(headers), key=msg.key(),
                                       change=change_header(headers))
                if isinstance(change, Upsert):
                    index.upsert(change.key, change.record, change.version, change.keys)
                elif isinstance(change, Leave):
                    index.delete(change.key, change.version)
                applied += 1
        if sharded:
            applied += len(feed.apply_ready())
    elapsed = time.perf_counter() - (started or time.perf_counter())
    reader.close()
    out.put({"applied": applied, "elapsed_s": elapsed, "citizens": len(index.citizens),
             "cpu_s": sum(psutil.Process().cpu_times()[:2])})


def _child(sharded: bool, settings: Any, total: int) -> tuple[mp.Process, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_apply_all, args=(settings, total, sharded, out))
    child.start()
    return child, out


def _cpu(pid: int) -> float:
    try:
        return float(sum(psutil.Process(pid).cpu_times()[:2]))
    except psutil.NoSuchProcess:
        return 0.0


def run_sharded(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from caselink.core.settings import Settings
    from caselink.demo import start_shard

    with local_broker(prefix="caselink-bench-shards-") as (settings, directory):
        total = fill_link_input(settings.kafka.bootstrap_servers, args.records)
        assert isinstance(settings, Settings)
        broker_before = broker_cpu(directory)
        started = time.perf_counter()
        shards = [start_shard(settings, tier, app_id=f"bench{n}") for tier in ("blocks", "records") for _ in range(n)]
        child, out = _child(True, settings, total)
        try:
            owned_at = None
            while owned_at is None:
                try:
                    if all(s.health().get("partitions_owned") for s in shards):
                        owned_at = time.perf_counter()
                except OSError:
                    time.sleep(0.2)
            result = out.get(timeout=3600)
            finished = time.perf_counter()
            cpu = {"block shards": sum(_cpu(s.proc.pid) for s in shards[:n]),
                   "record shards": sum(_cpu(s.proc.pid) for s in shards[n:]),
                   "resolver": result["cpu_s"], "broker": broker_cpu(directory) - broker_before}
        finally:
            for s in shards:
                s.proc.send_signal(signal.SIGTERM)
            for s in shards:
                s.proc.wait(30)
            child.join(30)
    return {"shards_per_tier": n, "events": total, "citizens": result["citizens"],
            "events_per_s": round(total / (finished - started)),
            "events_per_s_after_partitions_dealt": round(total / (finished - owned_at)),
            "group_start_s": round(owned_at - started, 1),
            "cpu_us_per_event": {k: round(v / total * 1e6, 1) for k, v in cpu.items()}}


def run_worker(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The worker catching up with the link input and publishing: the single writer (``n`` 0) or
    in sharded mode beside ``n`` block and ``n`` record shards."""
    from caselink.infra.topics import LINK_DECISIONS_TOPIC

    from caselink.core.kafka import read_to_end
    from caselink.demo import start_shard, start_worker

    with local_broker(prefix="caselink-bench-worker-") as (settings, directory):
        total = fill_link_input(settings.kafka.bootstrap_servers, args.records)
        broker_before = broker_cpu(directory)
        started = time.perf_counter()
        shards = [start_shard(settings, tier, app_id=f"benchw{n}") for tier in ("blocks", "records") for _ in range(n)]
        worker = start_worker(settings, app_id=f"benchw{n}", snapshot_interval_s=0, sharded=n > 0,
                              data_dir=directory / "worker")
        try:
            while True:
                if worker.proc.poll() is not None:
                    raise SystemExit(f"the worker exited; see {worker.log_path}")
                try:
                    health = worker.health()
                    if int(health.get("link_input_position", 0)) >= total and health.get("role") == "linker":
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.2)
            finished = time.perf_counter()
            rss_mb = round(psutil.Process(worker.proc.pid).memory_info().rss / 2**20)
            cpu = {"worker (linker)": _cpu(worker.proc.pid),
                   "block shards": sum(_cpu(s.proc.pid) for s in shards[:n]),
                   "record shards": sum(_cpu(s.proc.pid) for s in shards[n:]),
                   "broker": broker_cpu(directory) - broker_before}
            stamps = sorted(m.timestamp()[1] / 1000 for m in read_to_end(settings, [LINK_DECISIONS_TOPIC], timeout=120))
            citizens = int(health["citizens"])
        finally:
            for process in [worker, *shards]:
                process.proc.send_signal(signal.SIGTERM)
            for process in [worker, *shards]:
                try:
                    process.proc.wait(30)
                except Exception:  # noqa: BLE001 - a benchmark's clean-up
                    process.proc.kill()
    if len(stamps) != total:
        raise SystemExit(f"{len(stamps):,} link decisions for {total:,} changes")
    if n == 0:
        cpu = {k: v for k, v in cpu.items() if not k.endswith("shards")}
    return {"shards_per_tier": n, "events": total, "citizens": citizens,
            "events_per_s": round(total / max(stamps[-1] - stamps[0], 1e-9)),
            "start_to_last_decision_s": round(finished - started, 1), "worker_rss_mb": rss_mb,
            "cpu_us_per_event": {k: round(v / total * 1e6, 1) for k, v in cpu.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--shards", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--worker-shards", type=int, nargs="*", default=[1],
                        help="shards per tier beside a sharded worker (none: skip the workers)")
    args = parser.parse_args()
    results: dict[str, Any] = {"records": args.records, "runs": []}
    with local_broker(prefix="caselink-bench-single-") as (settings, directory):
        total = fill_link_input(settings.kafka.bootstrap_servers, args.records)
        print(f"{total:,} changes on the link input", flush=True)
        from confluent_kafka.admin import NewTopic

        from caselink.core.kafka import admin_client

        admin = admin_client(settings)
        for f in admin.create_topics([NewTopic("bench.ceiling", 1, 1)]).values():
            f.result()
        from caselink.infra.topics import LINK_INPUT_TOPIC

        results["ceiling_events_per_s"] = round(ceiling(settings.kafka.bootstrap_servers, [LINK_INPUT_TOPIC], total))
        print(f"ceiling (consume -> produce, no work): {results['ceiling_events_per_s']:,} events/s", flush=True)
        broker_before = broker_cpu(directory)
        child, out = _child(False, settings, total)
        single = out.get(timeout=3600)
        child.join(30)
        results["single"] = {"events": total, "citizens": single["citizens"],
                             "events_per_s": round(total / single["elapsed_s"]),
                             "cpu_us_per_event": {"single writer": round(single["cpu_s"] / total * 1e6, 1),
                                                  "broker": round((broker_cpu(directory) - broker_before) / total
                                                                  * 1e6, 1)}}
        print(f"single writer: {results['single']['events_per_s']:,} events/s, CPU per event "
              f"{results['single']['cpu_us_per_event']}", flush=True)
    for n in args.shards:
        row = run_sharded(n, args)
        if row["citizens"] != results["single"]["citizens"]:
            raise SystemExit(f"{n} shards per tier made {row['citizens']:,} citizens, the single writer "
                             f"{results['single']['citizens']:,}")
        row["ratio_to_single"] = round(row["events_per_s"] / results["single"]["events_per_s"], 2)
        row["ratio_to_single_after_partitions_dealt"] = round(
            row["events_per_s_after_partitions_dealt"] / results["single"]["events_per_s"], 2)
        results["runs"].append(row)
        print(f"{n} block + {n} record shards and a resolver: {row['events_per_s']:,} events/s from their start "
              f"({row['ratio_to_single']} of the single writer), {row['events_per_s_after_partitions_dealt']:,} once "
              f"partitions were dealt ({row['group_start_s']} s); CPU per event {row['cpu_us_per_event']}", flush=True)
    if args.worker_shards:
        results["workers"] = []
        for n in [0, *args.worker_shards]:
            row = run_worker(n, args)
            baseline = (results["workers"] or [row])[0]["events_per_s"]
            row["ratio_to_single_worker"] = round(row["events_per_s"] / baseline, 2)
            if row["citizens"] != results["single"]["citizens"]:  # the same index, however it was made
                raise SystemExit(f"the worker with {n} shards per tier made {row['citizens']:,} citizens, the "
                                 f"single writer {results['single']['citizens']:,}")
            results["workers"].append(row)
            what = "single-writer worker" if n == 0 else f"sharded worker with {n} block + {n} record shards"
            print(f"{what}: {row['events_per_s']:,} events/s first to last decision ({row['ratio_to_single_worker']} "
                  f"of the single-writer worker), {row['start_to_last_decision_s']} s from the processes' start; CPU "
                  f"per event {row['cpu_us_per_event']}; the worker's resident memory {row['worker_rss_mb']:,} MB",
                  flush=True)
    print(f"saved {save('scale_out_kafka', results)}")


if __name__ == "__main__":
    main()
