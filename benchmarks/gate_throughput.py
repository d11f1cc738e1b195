"""Consent gate: linked-case changes/s through the four purposes, and consent-to-effect latency.

    python benchmarks/gate_throughput.py [--citizens 20000] [--rounds 100]

1. the pure GateCore (no Kafka) over the same changes: the gate's own ceiling;
2. catch-up: a gate starting over N linked cases already on Kafka (replay + first evaluation +
   transactional publication of every purpose's views, disclosures and bookkeeping);
3. live: N further changes (every citizen's name corrected) produced as fast as possible while the
   gate runs; changes/s until their effects are committed;
4. latency: a research consent recorded for one citizen -> its pseudonymised view readable on
   ``caselink.cases.research``; then its withdrawal -> the tombstone readable; p50/p99 over rounds.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import UTC, datetime

from common import local_broker, percentile, save
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from pydantic import SecretStr


def linked_cases(n_citizens: int, version: int = 1) -> list[tuple[str, dict]]:
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
            members.append({"agency": r["agency"], "source_record_id": r["source_record_id"], "source_version": version,
                            "match_weight": 20.0, "linked_at": now, "person": person,
                            "cases": [{"case_id": f"{r['source_record_id']}-c", "case_type": "referral",
                                       "status": "open", "opened_at": "2026-10-01", "closed_at": None,
                                       "sensitivity": "normal"}]})
        cid = f"C{i:07d}"
        out.append((cid, {"citizen_id": cid, "version": version, "members": members, "merged_from": [],
                          "model_version": "bench", "updated_at": now}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--citizens", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()

    from caselink.connectors.consent_events import consent_event, subject_from, withdrawal_of
    from caselink.infra.topics import CONSENT_EVENTS_TOPIC, LINKED_CASES_TOPIC, purpose_topic
    from caselink.schemas import default_serde
    from caselink.streams.consent.gate_core import GateCore
    from caselink.streams.consent.gate_loop import GateLoop, pseudonymiser_from
    from caselink.streams.consent.policy import bundled_policy_path, load_policy

    from caselink.core.settings import ConsentSettings

    serde = default_serde()
    first = [(cid, serde.encode("LinkedCase", case)) for cid, case in linked_cases(args.citizens)]
    second = [(cid, serde.encode("LinkedCase", case)) for cid, case in linked_cases(args.citizens, version=2)]
    consents = [consent_event(subject_from(citizen=cid), "research", True, "bench") for cid, _ in first[::10]]
    results: dict = {"citizens": len(first), "purposes": 4, "research_consents": len(first[::10])}

    # 1. The pure core.
    consent = ConsentSettings(pseudonym_key=SecretStr("benchmark-key-0123456789abcdef"))
    core = GateCore(load_policy(bundled_policy_path()), pseudonymiser_from_settings(consent, pseudonymiser_from))
    for c in consents:
        core.apply_consent(c)
    started = time.perf_counter()
    for cid, value in first:
        core.apply_linked_case(cid, value)
    outputs = len(core.flush())
    for cid, value in second:
        core.apply_linked_case(cid, value)
    outputs += len(core.flush())
    core_s = time.perf_counter() - started
    results["core"] = {"changes": 2 * len(first), "seconds": round(core_s, 2),
                       "changes_per_s": round(2 * len(first) / core_s), "outputs": outputs}
    print(f"pure GateCore: {results['core']['changes_per_s']:,} linked-case changes/s "
          f"({outputs:,} output records)", flush=True)

    with local_broker() as (settings, _dir):
        settings = settings.model_copy(update={"consent": consent})
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 20,
                             "enable.idempotence": True})
        for c in consents:
            producer.produce(CONSENT_EVENTS_TOPIC, serde.encode("ConsentEvent", c), key=c["consent_id"].encode())
        for cid, value in first:
            producer.produce(LINKED_CASES_TOPIC, value, key=cid.encode())
            producer.poll(0)
        producer.flush(60)

        # 2. Catch-up from Kafka.
        gate = GateLoop(settings)
        started = time.perf_counter()
        gate.start()
        while not gate.caught_up:
            if gate.error:
                raise gate.error
            time.sleep(0.05)
        catch_up = time.perf_counter() - started
        status = gate.status()
        results["catch_up"] = {"changes": len(first), "seconds": round(catch_up, 2),
                               "changes_per_s": round(len(first) / catch_up), "releases": status["releases"]}
        print(f"catch-up over Kafka: {len(first):,} citizens in {catch_up:.1f}s = "
              f"{results['catch_up']['changes_per_s']:,} changes/s ({status['releases']:,} releases)", flush=True)

        # 3. Live changes.
        target = gate.inputs_committed + len(second)
        started = time.perf_counter()
        for cid, value in second:
            producer.produce(LINKED_CASES_TOPIC, value, key=cid.encode())
            producer.poll(0)
        producer.flush(60)
        while gate.inputs_committed < target:
            if gate.error:
                raise gate.error
            time.sleep(0.01)
        live = time.perf_counter() - started
        results["live"] = {"changes": len(second), "seconds": round(live, 2),
                           "changes_per_s": round(len(second) / live)}
        print(f"live: {len(second):,} changes in {live:.1f}s = {results['live']['changes_per_s']:,} changes/s",
              flush=True)

        # 4. Consent -> release and withdrawal -> retraction latency.
        watcher = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "bench-watch",
                            "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        md = watcher.list_topics(timeout=10)
        topic = purpose_topic("research")
        watcher.assign([TopicPartition(topic, p, OFFSET_END) for p in md.topics[topic].partitions])
        time.sleep(1.0)
        release_ms, retract_ms = [], []
        subjects = [cid for cid, _ in first[1::10]][: args.rounds]  # citizens with no research consent yet
        for cid in subjects:
            permit = consent_event(subject_from(citizen=cid), "research", True, "bench")
            for event, sink, want_value in ((permit, release_ms, True),
                                            (withdrawal_of(permit, "bench"), retract_ms, False)):
                t0 = time.perf_counter()
                producer.produce(CONSENT_EVENTS_TOPIC, serde.encode("ConsentEvent", event),
                                 key=event["consent_id"].encode())
                producer.flush(10)
                while True:
                    msg = watcher.poll(5)
                    if msg is None:
                        raise TimeoutError("no effect within 5 s")
                    if msg.error():
                        continue
                    if (msg.value() is not None) == want_value:
                        sink.append((time.perf_counter() - t0) * 1000)
                        break
        watcher.close()
        gate.stop()
        for name, values in (("consent_to_release_ms", release_ms), ("withdrawal_to_retraction_ms", retract_ms)):
            results[name] = {"rounds": len(values), "p50": round(percentile(values, 50), 1),
                             "p99": round(percentile(values, 99), 1), "max": round(max(values), 1)}
            print(f"{name}: p50 {results[name]['p50']} ms, p99 {results[name]['p99']} ms over {len(values)} rounds")
    print(f"saved {save('gate_throughput', results)}")


def pseudonymiser_from_settings(consent, factory):  # type: ignore[no-untyped-def]
    from caselink.core.settings import Settings

    return factory(Settings(consent=consent))


if __name__ == "__main__":
    main()
