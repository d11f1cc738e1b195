"""Restart and takeover of a worker whose index holds N records (default 1,000,000), and its memory.

    python benchmarks/recovery.py [--records 1000000]

1. N synthetic PersonEvents are put on ``caselink.link-input`` as the normaliser forwards them
   (with their packed standardised records), and the linker group's committed offset is set to
   the end, as if a worker had linked them all and died;
2. cold restart: a worker starts; time until it has rebuilt the index by replay and is live
   (``/health`` recovering false), and its resident memory then;
3. the live worker writes a snapshot of its index (time and size);
4. hot standby: a second worker starts, follows the log to the committed offset (time measured),
   the first is killed with SIGKILL; time from the kill until the standby is the linker and live,
   and how much of the log it had to replay;
5. restart from the snapshot: a worker starts on the first one's data directory; time until live.
"""

from __future__ import annotations

import argparse
import signal
import time
from datetime import UTC, datetime

import psutil
from caselink.infra.topics import LINK_INPUT_TOPIC, person_events_topic
from caselink.linkage.synthetic import records_for_size
from caselink.schemas import default_serde
from caselink.streams.normaliser_core import Normaliser
from common import local_broker, save
from confluent_kafka import Producer, TopicPartition

from caselink.core.kafka import admin_client, set_group_offsets
from caselink.demo import start_worker


def health(worker) -> dict:  # type: ignore[no-untyped-def]
    try:
        return worker.health()
    except (OSError, ValueError):
        return {}


def wait(condition, timeout: float = 3600) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("not within the timeout")
        time.sleep(0.2)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    serde = default_serde()
    normaliser = Normaliser()
    results: dict = {"records": args.records}
    with local_broker() as (settings, directory):
        print(f"generating and publishing {args.records:,} events to {LINK_INPUT_TOPIC} ...", flush=True)
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 50,
                             "enable.idempotence": True, "compression.type": "lz4"})
        now = datetime.now(UTC)
        for i, item in enumerate(records_for_size(args.records, seed=9)):
            value = serde.encode("PersonEvent", {
                "event_id": f"rec-{i}", "agency": item["agency"], "source_record_id": item["source_record_id"],
                "source_version": 1, "op": "UPSERT", "occurred_at": now, "emitted_at": now,
                "person": item["person"], "cases": [], "source": {}})
            # As the normaliser forwards it: the event unchanged, its packed standardised record in a header.
            topic, key, value, headers = normaliser.route(value, person_events_topic(item["agency"]), 0, i, None)
            if topic != LINK_INPUT_TOPIC:
                raise RuntimeError(f"synthetic record {i} was rejected by the normaliser")
            while True:
                try:
                    producer.produce(LINK_INPUT_TOPIC, value, key=key, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(300)
        app = "recovery"
        admin = admin_client(settings)
        set_group_offsets(admin, f"{app}-linker", [TopicPartition(LINK_INPUT_TOPIC, 0, args.records)])

        print("cold restart of a worker ...", flush=True)
        first = start_worker(settings, app_id=app, data_dir=directory / "w1", snapshot_interval_s=1)
        started = time.perf_counter()
        wait(lambda: health(first).get("role") == "linker" and health(first).get("recovering") is False)
        cold = time.perf_counter() - started
        rss = psutil.Process(first.proc.pid).memory_info().rss
        h = health(first)
        results["cold_restart"] = {"seconds": round(cold, 1), "records_per_s": round(args.records / cold),
                                   "index_records": h["records"], "citizens": h["citizens"],
                                   "rss_gb": round(rss / 1e9, 2)}
        print(f"cold restart: live after {cold:.1f}s ({args.records / cold:,.0f} records/s of replay), "
              f"{h['records']:,} records / {h['citizens']:,} citizens, RSS {rss / 1e9:.2f} GB", flush=True)

        # Once live it writes a snapshot of the whole index (in a forked child, while it goes on). The
        # child's own memory (pages copied from the worker's as pickling touches them) is sampled.
        worker_proc = psutil.Process(first.proc.pid)
        copied = [0]

        def snapshot_done() -> bool:
            for child in worker_proc.children():
                try:
                    if child.cmdline() == worker_proc.cmdline():  # a fork: the same command line
                        copied[0] = max(copied[0], child.memory_full_info().uss)
                except psutil.Error:
                    pass
            return health(first).get("snapshot", {}).get("last", {}).get("position") == args.records

        wait(snapshot_done)
        written = health(first)["snapshot"]["last"]
        results["snapshot_write"] = {"seconds": written["seconds"], "bytes": written["bytes"],
                                     "fork_ms": written["fork_ms"], "child_private_gb": round(copied[0] / 1e9, 2)}
        print(f"snapshot of the index written in {written['seconds']:.1f}s ({written['bytes'] / 1e9:.2f} GB); "
              f"the linker paused {written['fork_ms']:.0f} ms to fork; the child's private memory reached "
              f"{copied[0] / 1e9:.2f} GB (sampled)", flush=True)

        print("starting a hot standby ...", flush=True)
        second = start_worker(settings, app_id=app, data_dir=directory / "w2")
        follow = wait(lambda: health(second).get("standby_position", 0) >= args.records)
        print(f"standby followed the log in {follow:.1f}s", flush=True)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        started = time.perf_counter()
        wait(lambda: health(second).get("role") == "linker" and health(second).get("recovering") is False)
        takeover = time.perf_counter() - started
        h = health(second)
        results["hot_standby"] = {"follow_seconds": round(follow, 1), "takeover_seconds_after_kill": round(takeover, 1),
                                  "replayed_silently": h["last_takeover"].get("replayed_silently"),
                                  "rss_gb": round(psutil.Process(second.proc.pid).memory_info().rss / 1e9, 2)}
        print(f"takeover after kill -9: live in {takeover:.1f}s (session timeout 10 s included), replayed "
              f"{h['last_takeover'].get('replayed_silently')} messages", flush=True)
        second.stop()

        print("restart of a worker from its snapshot ...", flush=True)
        third = start_worker(settings, app_id=app, data_dir=directory / "w1")
        started = time.perf_counter()
        wait(lambda: health(third).get("role") == "linker" and health(third).get("recovering") is False)
        from_snapshot = time.perf_counter() - started
        h = health(third)
        rss = psutil.Process(third.proc.pid).memory_info().rss
        results["restart_from_snapshot"] = {
            "seconds": round(from_snapshot, 1), "load_seconds": h["snapshot"]["loaded"]["seconds"],
            "replayed_silently": h["last_takeover"].get("replayed_silently"), "index_records": h["records"],
            "rss_gb": round(rss / 1e9, 2)}
        loading = h["snapshot"]["loaded"]["seconds"]
        print(f"restart from the snapshot: live after {from_snapshot:.1f}s (loading {loading:.1f}s), "
              f"{h['records']:,} records, replayed {h['last_takeover'].get('replayed_silently')} messages, "
              f"RSS {rss / 1e9:.2f} GB", flush=True)
        third.stop()
    print(f"saved {save(f'recovery_{args.records}', results)}")


if __name__ == "__main__":
    main()
