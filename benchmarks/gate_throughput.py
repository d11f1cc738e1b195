"""Consent gate: linked-case changes/s through the four purposes, beside the linker, in one run.

    python benchmarks/gate_throughput.py [--citizens 20000] [--rounds 100] [--linker-events 30000]
                                         [--processes 1 2] [--partitioned 1 2] [--partitions 3]
                                         [--core-only]

1. the linker, the baseline: a worker (normaliser process + linker) on a broker of its own is sent
   --linker-events synthetic PersonEvents at once; events/s from the first to the last link
   decision (broker timestamps), the way benchmarks/pipeline_throughput.py measures it. Then a
   gate catches up with the linked cases the linker produced, and a second burst goes through the
   linker with the gate running beside it: both stages' events/s in that chain;
2. the pure GateCore (no Kafka), CPU time: the gate's own ceiling for the same changes;
3. for each number of gate processes (`caselink gate`, each its own process, as deployed), on a
   fresh broker holding N linked cases and research consents for one citizen in ten:
   * catch-up: from the processes' start until every view, disclosure and bookkeeping record is
     committed (and the same without the processes' start-up, from the gates' own clocks);
   * live, a corrected name: N changes produced as fast as possible while the gates run;
     changes/s until every input's effects are committed (a name reaches two of the four purposes);
   * live, a new case on every record: N changes that reach every purpose;
   * latency (one gate process): a research consent recorded for one citizen -> its pseudonymised
     view readable on ``caselink.cases.research``; then its withdrawal -> the tombstone; p50/p99.
   With --partitioned, the same for that many processes sharing the citizens
   (``consent.partitioned``) instead of one active gate and standbys; --partitions sets how many
   partitions every topic has, for every run (the linked cases' partitions are what is shared).
Every rate is also printed as a ratio to the linker's events/s. The machine's load average is
recorded before and after each phase (other work on a shared machine shows there).
Results: benchmarks/results/gate_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from common import local_broker, percentile, save
from confluent_kafka import Consumer, Producer, TopicPartition
from pipeline_throughput import _cpu_seconds, broker_cpu, encode_events, worker_cpu
from pipeline_throughput import publish as publish_events

KEY = "benchmark-key-0123456789abcdef"


def linked_cases(n_citizens: int, version: int = 1, new_case: bool = False) -> list[tuple[str, dict]]:
    """Synthetic citizens (1.6 records each on average). ``version`` > 1 corrects every given name;
    ``new_case`` also opens a second case on every record."""
    from caselink.linkage.synthetic import records_for_size

    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records_for_size(int(n_citizens * 1.6), seed=11):
        groups[record["truth"]].append(record)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i, (_truth, records) in enumerate(sorted(groups.items())[:n_citizens]):
        members = []
        for r in records:
            person = {**r["person"]}
            if version > 1:
                person["given_names"] = f"{person.get('given_names') or ''} v{version}".strip()
            cases = [{"case_id": f"{r['source_record_id']}-c", "case_type": "referral", "status": "open",
                      "opened_at": "2026-10-01", "closed_at": None, "sensitivity": "normal"}]
            if new_case:
                cases.append({**cases[0], "case_id": f"{r['source_record_id']}-c{version}", "opened_at": "2026-11-02"})
            members.append({"agency": r["agency"], "source_record_id": r["source_record_id"], "source_version": version,
                            "match_weight": 20.0, "linked_at": now, "person": person, "cases": cases})
        cid = f"C{i:07d}"
        out.append((cid, {"citizen_id": cid, "version": version, "members": members, "merged_from": [],
                          "model_version": "bench", "updated_at": now}))
    return out


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def linker_baseline(n: int) -> dict[str, Any]:
    """The linker's events/s, and the gate on the linker's own output, on one broker.

    1. a worker links a burst of ``n`` synthetic events: events/s from the first to the last link
       decision (the baseline every gate figure is divided by);
    2. a gate process starts and catches up with the linked cases those events produced;
    3. a second burst of ``n`` new events while the gate runs beside the linker (the chain as
       deployed): the linker's events/s, and the gate's: events over the time from the burst's first
       link decision until the gate has committed the effects of every linked case it produced.
    """
    from caselink.infra.topics import LINK_DECISIONS_TOPIC, LINKED_CASES_TOPIC
    from caselink.linkage.synthetic import records_for_size

    from caselink.core.kafka import read_to_end
    from caselink.demo import start_gate, start_worker, wait_for_worker, wait_until_quiet

    os.environ["CASELINK_CONSENT__PSEUDONYM_KEY"] = KEY
    out: dict[str, Any] = {"events": n}
    with local_broker() as (settings, directory):
        records = records_for_size(2 * n, seed=31)
        bursts = [encode_events(records[:n]), encode_events(records[n:], start=n)]
        worker = start_worker(settings, data_dir=directory / "worker")
        gate = None
        try:
            wait_for_worker(worker, 0, timeout=120)  # started, before the clock
            out["load_before"] = load()
            cpu_before = {**worker_cpu(worker.proc.pid), "broker": broker_cpu(directory)}
            publish_events(settings.kafka.bootstrap_servers, bursts[0])
            wait_for_worker(worker, n, timeout=900)
            wait_until_quiet(settings, [LINKED_CASES_TOPIC])
            cpu = {k: v - cpu_before[k] for k, v in {**worker_cpu(worker.proc.pid),
                                                      "broker": broker_cpu(directory)}.items()}
            stamps = sorted(m.timestamp()[1] / 1000 for m in read_to_end(settings, [LINK_DECISIONS_TOPIC]))
            out["events_per_s"] = round(len(stamps) / max(stamps[-1] - stamps[0], 1e-9))
            out["cpu_us_per_event"] = {k: round(v / n * 1e6) for k, v in cpu.items()}
            cases = sum(1 for _ in read_to_end(settings, [LINKED_CASES_TOPIC]))
            print(f"  linker alone: {out['events_per_s']:,} events/s first to last link decision "
                  f"({cases:,} linked-case messages); CPU per event: " + ", ".join(
                      f"{k} {v} µs" for k, v in out["cpu_us_per_event"].items()), flush=True)

            started = time.perf_counter()
            gate = start_gate(settings, app_id="bench-chain")
            end = wait_committed([gate], LINKED_CASES_TOPIC, cases)
            own = gate.health().get("catch_up_s") or 0.0
            out["gate_catch_up_on_linker_output"] = {
                "linked_case_messages": cases, "seconds": round(end - started, 2), "gates_own_seconds": round(own, 2),
                "events_per_s_without_start_up": round(n / own) if own else None}
            print(f"  gate catching up with those linked cases: {own:.1f}s = "
                  f"{out['gate_catch_up_on_linker_output']['events_per_s_without_start_up']:,} events/s", flush=True)

            publish_events(settings.kafka.bootstrap_servers, bursts[1])
            wait_for_worker(worker, 2 * n, timeout=900)
            wait_until_quiet(settings, [LINKED_CASES_TOPIC])
            total = sum(1 for _ in read_to_end(settings, [LINKED_CASES_TOPIC]))
            wait_committed([gate], LINKED_CASES_TOPIC, total)
            gate_done = time.time()
            keys = {k for _, k, _ in bursts[1]}
            stamps = sorted(m.timestamp()[1] / 1000 for m in read_to_end(settings, [LINK_DECISIONS_TOPIC])
                            if m.key() in keys)
            linker_rate = len(stamps) / max(stamps[-1] - stamps[0], 1e-9)
            gate_rate = len(stamps) / max(gate_done - stamps[0], 1e-9)
            out["chain"] = {"linked_case_messages": total - cases, "linker_events_per_s": round(linker_rate),
                            "gate_events_per_s": round(gate_rate), "gate_done_after_linker_s":
                            round(gate_done - stamps[-1], 2), "gate_ratio_to_linker": round(gate_rate / linker_rate, 2)}
            print(f"  chain, {n:,} more events with the gate running: linker {linker_rate:,.0f} events/s, gate "
                  f"{gate_rate:,.0f} events/s (done {gate_done - stamps[-1]:.1f}s after the linker; "
                  f"{total - cases:,} linked-case messages)", flush=True)
        finally:
            if gate is not None:
                gate.stop()
            worker.stop()
    out["load_after"] = load()
    return out


def core_ceiling(first: list, second: list, third: list, consents: list, policy: Any,
                 pseudonymiser: Any) -> dict[str, Any]:
    """CPU time of the pure core, with the garbage collector set as `caselink gate` sets it."""
    import gc

    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.streams.consent.gate_core import GateCore

    previous = tune_gc_for_large_index()
    core = GateCore(policy, pseudonymiser)
    for c in consents:
        core.apply_consent(c)
    rates = {}
    for name, changes in (("first_release", first), ("corrected_name", second), ("new_case", third)):
        if name != "first_release":
            gc.freeze()  # as the gate process does once caught up
        started = time.process_time()
        for cid, value in changes:
            core.apply_linked_case(cid, value)
        outputs = len(core.flush())
        cpu = time.process_time() - started
        rates[name] = {"changes": len(changes), "cpu_s": round(cpu, 2), "changes_per_cpu_s": round(len(changes) / cpu),
                       "cpu_us_per_change": round(cpu / len(changes) * 1e6), "outputs": outputs}
    gc.unfreeze()
    gc.set_threshold(*previous)
    return rates


def committed(gates: list, topic: str) -> int:
    """Sum over partitions of ``topic`` of the highest position any gate process has committed."""
    best: dict[str, int] = {}
    for g in gates:
        try:
            positions = g.health().get("positions") or {}
        except (OSError, ValueError):
            continue
        for where, offset in positions.items():
            if where.startswith(f"{topic}:"):
                best[where] = max(best.get(where, 0), offset)
    return sum(best.values())


def wait_committed(gates: list, topic: str, target: int, timeout: float = 900) -> float:
    deadline = time.monotonic() + timeout
    while committed(gates, topic) < target:
        for g in gates:
            if g.proc.poll() is not None:
                raise RuntimeError(f"a gate process exited; see {g.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gates committed {committed(gates, topic)} of {target} inputs of {topic}")
        time.sleep(0.02)
    return time.perf_counter()


def produce_all(producer: Producer, topic: str, items: list[tuple[str, bytes]]) -> None:
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value, key=key.encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)


def framed(serde: Any, cases: tuple[list, list, list]) -> tuple[list, list, list]:
    """Each kind of change as (citizen id, LinkedCase bytes) framed against the serde's registry."""
    first, second, third = ([(cid, serde.encode("LinkedCase", case)) for cid, case in kind] for kind in cases)
    return first, second, third


def gate_run(processes: int, cases: tuple[list, list, list], consents: list, permitted: list[str], rounds: int,
             serde: Any, partitioned: bool = False, partitions: int = 3) -> dict[str, Any]:
    import psutil
    from caselink.connectors.consent_events import consent_event, subject_from, withdrawal_of
    from caselink.infra.topics import CONSENT_EVENTS_TOPIC, LINKED_CASES_TOPIC, purpose_topic

    from caselink.demo import start_gate

    os.environ["CASELINK_CONSENT__PSEUDONYM_KEY"] = KEY
    os.environ["CASELINK_CONSENT__PARTITIONED"] = "true" if partitioned else "false"
    result: dict[str, Any] = {"processes": processes, "partitioned": partitioned, "partitions": partitions}
    with local_broker(partitions=partitions) as (settings, directory):
        first, second, third = framed(serde, cases)  # against this broker's registry
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 20,
                             "enable.idempotence": True})
        produce_all(producer, CONSENT_EVENTS_TOPIC, [(c["consent_id"], serde.encode("ConsentEvent", c))
                                                     for c in consents])
        produce_all(producer, LINKED_CASES_TOPIC, first)
        total = len(first)
        broker_before = broker_cpu(directory)

        # Catch-up.
        result["load_before"] = load()
        started = time.perf_counter()
        gates = [start_gate(settings, app_id="bench") for _ in range(processes)]
        try:
            end = wait_committed(gates, LINKED_CASES_TOPIC, total)
            own = max(g.health().get("catch_up_s") or 0.0 for g in gates)
            result["catch_up"] = {"changes": total, "seconds": round(end - started, 2),
                                  "changes_per_s": round(total / (end - started)),
                                  "gates_own_seconds": round(own, 2), "changes_per_s_without_start_up": round(
                                      total / own) if own else None}
            print(f"  catch-up: {total:,} citizens in {end - started:.1f}s = {result['catch_up']['changes_per_s']:,}"
                  f" changes/s ({result['catch_up']['changes_per_s_without_start_up']:,}/s without process start-up)",
                  flush=True)

            # Live: a corrected name, then a new case on every record.
            for name, changes in (("live_corrected_name", second), ("live_new_case", third)):
                cpu_before = sum(_cpu_seconds(psutil.Process(g.proc.pid)) for g in gates)
                broker_before = broker_cpu(directory)
                total += len(changes)
                started = time.perf_counter()
                produce_all(producer, LINKED_CASES_TOPIC, changes)
                end = wait_committed(gates, LINKED_CASES_TOPIC, total)
                gate_cpu = sum(_cpu_seconds(psutil.Process(g.proc.pid)) for g in gates) - cpu_before
                result[name] = {"changes": len(changes), "seconds": round(end - started, 2),
                                "changes_per_s": round(len(changes) / (end - started)),
                                "gate_cpu_us_per_change": round(gate_cpu / len(changes) * 1e6),
                                "broker_cpu_us_per_change": round((broker_cpu(directory) - broker_before)
                                                                  / len(changes) * 1e6)}
                print(f"  {name}: {len(changes):,} changes in {end - started:.1f}s = "
                      f"{result[name]['changes_per_s']:,} changes/s (CPU per change: gates "
                      f"{result[name]['gate_cpu_us_per_change']} µs, broker {result[name]['broker_cpu_us_per_change']}"
                      " µs)", flush=True)
            result["statuses"] = [g.health() for g in gates]

            if processes == 1 and not partitioned:
                result.update(latency(settings, producer, serde, permitted, rounds, consent_event, subject_from,
                                      withdrawal_of, CONSENT_EVENTS_TOPIC, purpose_topic("research")))
        finally:
            for g in gates:
                g.stop()
        result["load_after"] = load()
    return result


def latency(settings: Any, producer: Producer, serde: Any, citizens: list[str], rounds: int, consent_event: Any,
            subject_from: Any, withdrawal_of: Any, consent_topic: str, topic: str) -> dict[str, Any]:
    watcher = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "bench-watch",
                        "enable.auto.commit": False, "fetch.wait.max.ms": 5, "isolation.level": "read_committed"})
    md = watcher.list_topics(timeout=10)
    # Start at each partition's end as it is now, looked up before anything is sent: OFFSET_END is
    # resolved at the first poll, which comes after the consent is sent, so a release written
    # before that lookup was skipped and the watcher waited for a message that had already come.
    ends = [watcher.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.topics[topic].partitions]
    watcher.assign([TopicPartition(topic, p, end) for p, end in zip(md.topics[topic].partitions, ends, strict=True)])
    release_ms: list[float] = []
    retract_ms: list[float] = []
    for cid in citizens[:rounds]:
        permit = consent_event(subject_from(citizen=cid), "research", True, "bench")
        steps = ((permit, release_ms, True), (withdrawal_of(permit, "bench"), retract_ms, False))
        for event, sink, want_value in steps:
            t0 = time.perf_counter()
            producer.produce(consent_topic, serde.encode("ConsentEvent", event), key=event["consent_id"].encode())
            producer.flush(10)
            while True:
                msg = watcher.poll(60)
                if msg is None:
                    raise TimeoutError(f"no effect on {topic} within 60 s of a consent for {cid}")
                if msg.error():
                    continue
                if (msg.value() is not None) == want_value:
                    sink.append((time.perf_counter() - t0) * 1000)
                    break
    watcher.close()
    out = {}
    for name, values in (("consent_to_release_ms", release_ms), ("withdrawal_to_retraction_ms", retract_ms)):
        out[name] = {"rounds": len(values), "p50": round(percentile(values, 50), 1),
                     "p99": round(percentile(values, 99), 1), "max": round(max(values), 1)}
        print(f"  {name}: p50 {out[name]['p50']} ms, p99 {out[name]['p99']} ms over {len(values)} rounds", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--citizens", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--linker-events", type=int, default=30000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1],
                        help="gate processes electing one active gate (the others standbys)")
    parser.add_argument("--partitioned", type=int, nargs="*", default=[],
                        help="gate processes sharing the citizens (consent.partitioned)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of every topic")
    parser.add_argument("--core-only", action="store_true",
                        help="only the pure GateCore's CPU per change (no brokers, no linker); not saved")
    args = parser.parse_args()

    from caselink.connectors.consent_events import consent_event, subject_from
    from caselink.schemas import default_serde
    from caselink.streams.consent.policy import bundled_policy_path, load_policy
    from caselink.streams.consent.pseudonym import Pseudonymiser

    serde = default_serde()
    # The cases as dicts; each run frames them against the registry it uses (a broker's own, or for
    # the pure core, with no broker, the unit tests' in-process one).
    cases = (linked_cases(args.citizens), linked_cases(args.citizens, version=2),
             linked_cases(args.citizens, 3, new_case=True))
    consents = [consent_event(subject_from(citizen=cid), "research", True, "bench") for cid, _ in cases[0][::10]]
    results: dict[str, Any] = {"citizens": len(cases[0]), "purposes": 4, "research_consents": len(consents)}
    policy, pseudonymiser = load_policy(bundled_policy_path()), Pseudonymiser(KEY.encode(), "k1")
    # For the latency rounds: citizens with no research consent yet whose records research may take
    # (a citizen known only to an agency it does not take gets nothing from a permit).
    research = policy.purposes["research"]
    permitted = [cid for cid, case in cases[2][1::10]
                 if any(research.allows_agency(m["agency"]) for m in case["members"])]

    def core() -> dict[str, Any]:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.memory_registry import MemoryRegistry

        serde.bind(MemoryRegistry())
        return core_ceiling(*framed(serde, cases), consents, policy, pseudonymiser)

    if args.core_only:
        for name, r in core().items():
            print(f"pure GateCore, {name}: {r['cpu_us_per_change']} µs a change ({r['outputs']:,} outputs)", flush=True)
        return

    print(f"linker baseline: {args.linker_events:,} events through a worker ...", flush=True)
    results["linker"] = linker_baseline(args.linker_events)
    linker = results["linker"]["events_per_s"]

    results["core"] = core()
    for name, r in results["core"].items():
        print(f"pure GateCore, {name}: {r['changes_per_cpu_s']:,} changes per CPU second "
              f"({r['cpu_us_per_change']} µs a change; {r['outputs']:,} outputs)", flush=True)

    results["gate"] = []
    for processes, partitioned in [*((n, False) for n in args.processes), *((n, True) for n in args.partitioned)]:
        print(f"{processes} gate process(es){', sharing the citizens' if partitioned else ''} "
              f"({args.partitions} partitions):", flush=True)
        run = gate_run(processes, cases, consents, permitted, args.rounds, serde, partitioned, args.partitions)
        for name in ("catch_up", "live_corrected_name", "live_new_case"):
            run[name]["ratio_to_linker"] = round(run[name]["changes_per_s"] / linker, 2)
        results["gate"].append(run)
        print(f"  ratio to the linker's {linker:,} events/s: " + ", ".join(
            f"{name} {run[name]['ratio_to_linker']}" for name in ("catch_up", "live_corrected_name", "live_new_case")),
            flush=True)
    print(f"saved {save('gate_throughput', results)}")


if __name__ == "__main__":
    main()
