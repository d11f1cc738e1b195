"""A block shard killed and restarted: what it costs its tier, with and without a name (issue 20).

    python benchmarks/shard_restart.py [--records 100000] [--session-timeout 10]

The link input is filled with ``--records`` synthetic records as the normaliser writes them
(``scale_out_kafka.fill_link_input``). Two block shards answer it to the end. Then one is killed
with SIGKILL and started again at once, and the script times how long until both have answered
the whole link input again, and counts the link-input messages the tier read again to get there
(each rebuild replays the log from the start up to where the shard stood). Twice, each on a
fresh broker:

* ``unnamed``: the default, dynamic members. The restarted process is a new member; the group
  waits for the dead one's session to time out, then deals the partitions again, and a shard
  dealt partitions it did not hold rebuilds everything it holds;
* ``named``: ``shards.instance_id`` (static members, KIP-345). The restarted process is dealt its
  own partitions at once; the other shard is dealt nothing and goes on;
* ``named, snapshots``: also ``shards.data_dir`` (each shard a directory of its own, a snapshot
  every second): the restarted shard loads its snapshot, taken at the end of the link input before
  the kill, instead of replaying the log.

Both use the same session timeout. Results: benchmarks/results/shard_restart.json.
"""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from common import local_broker, save
from scale_out_kafka import fill_link_input


def _health(shard: Any) -> dict[str, Any] | None:
    try:
        return shard.health()  # type: ignore[no-any-return]
    except OSError:
        return None


def _wait(condition: Any, timeout: float = 1800.0) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout} s")
        time.sleep(0.1)
    return time.perf_counter()


def run(named: bool, snapshots: bool, args: argparse.Namespace) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    from caselink.demo import start_shard

    folder = Path(tempfile.mkdtemp(prefix="caselink-bench-restart-shards-"))

    def start(i: int) -> Any:
        return start_shard(settings, "blocks", app_id="restart", instance_id=f"blocks-{i}" if named else None,
                           session_timeout_s=args.session_timeout,
                           data_dir=folder / f"blocks-{i}" if snapshots else None, snapshot_interval_s=1.0)

    def snapshot_at_end(shard: Any) -> bool:
        return not snapshots or ((_health(shard) or {}).get("snapshot", {}).get("last", {}).get("position") == end)

    def answered(shards: list[Any], end: int) -> bool:
        healths = [_health(s) for s in shards]
        return all(h is not None and h.get("partitions_owned") and h.get("position", 0) >= end for h in healths) \
            and sorted(p for h in healths for p in h["partitions_owned"]) == list(range(partitions))  # type: ignore[index]

    with local_broker(prefix="caselink-bench-restart-") as (settings, _directory):
        partitions = settings.shards.partitions
        end = fill_link_input(settings.kafka.bootstrap_servers, args.records)
        shards = [start(0), start(1)]
        try:
            _wait(lambda: answered(shards, end) and snapshot_at_end(shards[0]))
            before = [_health(s) for s in shards]
            killed = time.perf_counter()
            shards[0].proc.send_signal(signal.SIGKILL)
            shards[0].proc.wait()
            shards[0] = start(0)
            dealt = _wait(lambda: (h := _health(shards[0])) is not None and bool(h.get("partitions_owned")))
            recovered = _wait(lambda: answered(shards, end))
            after = [_health(s) for s in shards]
        finally:
            for s in shards:
                s.proc.send_signal(signal.SIGTERM)
            for s in shards:
                s.proc.wait(60)
    assert all(before) and all(after)
    # The other shard's rebuilds after the kill replayed the log up to where it stood; the
    # restarted process's one rebuild replayed it all.
    other_rebuilds = after[1]["rebuilds"] - before[1]["rebuilds"]  # type: ignore[index]
    loaded = (after[0].get("snapshot") or {}).get("loaded")  # type: ignore[union-attr]
    return {"named": named, "snapshots": snapshots, "events": end, "snapshot_loaded": loaded,
            "session_timeout_s": args.session_timeout,
            "restarted_shard_dealt_partitions_after_s": round(dealt - killed, 1),
            "tier_answered_to_end_again_after_s": round(recovered - killed, 1),
            "other_shard_rebuilds": other_rebuilds,
            # a rebuild replays the log from the start, or from a snapshot's position
            "link_input_read_again": end * (after[0]["rebuilds"] + other_rebuilds)  # type: ignore[index]
            - (loaded["position"] if loaded else 0),
            "partitions_before": [len(h["partitions_owned"]) for h in before],  # type: ignore[index]
            "partitions_after": [len(h["partitions_owned"]) for h in after]}  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    args = parser.parse_args()
    results: dict[str, Any] = {"records": args.records, "runs": []}
    for named, snapshots in ((False, False), (True, False), (True, True)):
        r = run(named, snapshots, args)
        results["runs"].append(r)
        name = ("named" if named else "unnamed") + (", snapshots" if snapshots else "")
        print(f"{name}: {r['events']:,} link-input messages; killed and restarted "
              f"at once; the restarted shard dealt partitions after {r['restarted_shard_dealt_partitions_after_s']} s; "
              f"the tier answered to the end again after "
              f"{r['tier_answered_to_end_again_after_s']} s; the other shard rebuilt {r['other_shard_rebuilds']} "
              f"time(s); link-input messages read again: {r['link_input_read_again']:,}", flush=True)
    unnamed, named_run, with_snapshots = results["runs"]
    base = unnamed["tier_answered_to_end_again_after_s"]
    results["ratio_named_to_unnamed"] = round(named_run["tier_answered_to_end_again_after_s"] / base, 2)
    results["ratio_snapshots_to_unnamed"] = round(with_snapshots["tier_answered_to_end_again_after_s"] / base, 2)
    print(f"time until the tier had answered everything again, against unnamed: named "
          f"{results['ratio_named_to_unnamed']}, named with snapshots {results['ratio_snapshots_to_unnamed']}")
    print(f"saved {save('shard_restart', results)}")


if __name__ == "__main__":
    main()
