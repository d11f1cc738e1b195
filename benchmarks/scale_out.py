"""The sharded index's tiers, each measured alone, beside the single writer (issue 20).

    python benchmarks/scale_out.py [--records 1000000] [--shards 1 2 3]

Synthetic records (the UK-shaped set, seed 99) are standardised once, with their blocking keys and
the keys' partitions (``linkage.shards.keyed``, the normaliser's work in a deployment, as the keys
already are), in a child process and written to a file in chunks. Then each tier runs in a process of its own,
as it would be deployed, reading the same ordered changes:

* ``single``: today's single writer (``CitizenIndex``) linking every record;
* ``blocks i of n``: one ``BlockShard`` (every change; its partitions' blocks), for n in
  ``--shards``; the one-shard run writes what it found for every change to a file;
* ``records i of n``: one ``RecordShard`` (every change with the records found for it, read from
  that file as it would arrive from Kafka; it scores the pairs whose other record lives with it);
  the one-shard run writes the scored answer of every change to a second file;
* ``resolver``: ``CitizenIndex(resolver=True)`` given every change with that answer and the record's
  key and identifiers (which its home record shard would send with it): no record values.

By the property in ``tests/unit/test_shards.py`` what is found and scored for a change is the same
for any number of shards, so one file of each serves every shard count.

For each: CPU microseconds per event over the whole load and over its last ``--tail`` records (an
index near its full size), and the resident memory the process gained from before its first record
(records included, as the worker holds them). Ratios are to the single writer in the same run. The
tiers are measured in one process each, in turn, not yet on Kafka: end-to-end throughput of a
deployed sharded index is not measured here (docs/benchmarks.md says what is built).
Results: benchmarks/results/scale_out.json.
"""

from __future__ import annotations

import argparse
import gc
import marshal
import multiprocessing as mp
import pickle
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from common import save

CHUNK = 2_000  # small, so the chunk in hand is little of any tier's memory


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def _write_records(path: str, n: int) -> None:
    """In a child: generate, standardise and key the records (garbage stays out of the measured)."""
    from caselink.linkage.blocking import blocking_keys
    from caselink.linkage.models import default_model
    from caselink.linkage.record import UnlinkableRecordError, standardise_person
    from caselink.linkage.shards import keyed
    from caselink.linkage.synthetic import records_for_size

    rules = default_model().rules
    with open(path, "wb") as f:
        chunk: list[tuple[Any, ...]] = []
        for d in records_for_size(n, seed=99):
            try:
                r = standardise_person(f"{d['agency']}:{d['source_record_id']}", d["person"], rules)
            except UnlinkableRecordError:
                continue
            keys = blocking_keys(r, rules.typo_schemes)
            chunk.append((r, keys, *keyed(keys)))  # as the normaliser would send them
            if len(chunk) == CHUNK:
                pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
                chunk = []
        if chunk:
            pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)


def _chunks(path: str) -> Iterator[list[tuple[Any, ...]]]:
    from caselink.linkage.record import share_values

    with open(path, "rb") as f:
        while True:
            try:
                chunk = pickle.load(f)
            except EOFError:
                return
            for r, *_keys in chunk:
                share_values(r)  # as records the worker standardises share equal values
            yield chunk


class _Clock:
    """CPU time of the measured calls only, overall and for the last ``tail`` events."""

    def __init__(self, total: int, tail: int) -> None:
        self.cpu = self.tail_cpu = 0.0
        self.events = 0
        self.tail_from = total - tail

    def add(self, seconds: float) -> None:
        self.cpu += seconds
        if self.events >= self.tail_from:
            self.tail_cpu += seconds
        self.events += 1

    def figures(self, tail: int) -> dict[str, float]:
        return {"events": self.events, "cpu_us_per_event": round(self.cpu / self.events * 1e6, 1),
                "tail_cpu_us_per_event": round(self.tail_cpu / tail * 1e6, 1)}


def _tier(kind: str, path: str, total: int, tail: int, shard: int, shards: int,
          out: Any) -> None:
    """In a child: run one tier over every record and report its CPU and memory."""
    from caselink.linkage.index import CitizenIndex
    from caselink.linkage.models import default_model
    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.linkage.scoring import Scored
    from caselink.linkage.shards import BlockShard, RecordShard, shard_partitions

    model = default_model()
    tune_gc_for_large_index()
    clock = _Clock(total, tail)
    cpu = time.process_time
    gc.collect()
    base = rss_mb()
    extra: dict[str, Any] = {}
    if kind == "single":
        index = CitizenIndex(model)
        for chunk in _chunks(path):
            for r, keys, *_ in chunk:
                t = cpu()
                index.upsert(r.key, r, 1, keys)
                clock.add(cpu() - t)
        extra = {"citizens": len(index.citizens)}
    elif kind == "blocks":
        blocks = BlockShard(shard_partitions(shard, shards))
        writer = open(path + ".found", "wb") if shards == 1 else None
        for chunk in _chunks(path):
            said = []
            for r, _keys, stored, looked_up in chunk:
                t = cpu()
                found = blocks.upsert(r.key, stored, looked_up, 1)
                clock.add(cpu() - t)
                said.append(found)
            if writer is not None:
                marshal.dump(said, writer)
        if writer is not None:
            writer.close()
        extra = {"keys_held": len(blocks.blocking.blocks), "capped": len(blocks.blocking.capped)}
    elif kind == "records":
        scorer = RecordShard(model, shard_partitions(shard, shards))
        writer = open(path + ".scored", "wb") if shards == 1 else None
        with open(path + ".found", "rb") as f:
            for chunk in _chunks(path):
                found_all = marshal.load(f)
                said = []
                for (r, *_), found in zip(chunk, found_all, strict=True):
                    t = cpu()
                    answer = scorer.upsert(r.key, r, found, 1)
                    clock.add(cpu() - t)
                    # with the record's key and identifiers, as its home shard would send them
                    said.append((r.key, r.ids, None if answer is None else (answer.pairs, answer.unchanged)))
                if writer is not None:
                    marshal.dump(said, writer)
        if writer is not None:
            writer.close()
        extra = {"compared": scorer.compared, "records_held": len(scorer.records)}
    else:
        from caselink.linkage.index import IdsOnly

        index = CitizenIndex(model, resolver=True)
        with open(path + ".scored", "rb") as f:  # the resolver reads no record values at all
            while True:
                try:
                    said = marshal.load(f)
                except EOFError:
                    break
                for key, ids, answer in said:
                    scored = None if answer is None else Scored(*answer)
                    t = cpu()
                    index.upsert(key, IdsOnly(key, ids), 1, None, scored)
                    clock.add(cpu() - t)
        extra = {"citizens": len(index.citizens)}
    gc.collect()
    out.put({"tier": kind, "shard": shard, "shards": shards, **clock.figures(tail),
             "rss_mb": round(rss_mb() - base), **extra})


def _name(row: dict[str, Any]) -> str:
    return row["tier"] if row["shards"] == 1 and row["tier"] in ("single", "resolver") else (
        f"{row['tier']} {row['shard'] + 1} of {row['shards']}")


def _say(row: dict[str, Any], tail: int) -> None:
    held = {k: f"{row[k]:,}" for k in ("records_held", "compared", "keys_held", "capped") if k in row}
    print(f"{_name(row)}: {row['cpu_us_per_event']} us/event, last {tail:,}: {row['tail_cpu_us_per_event']} us, "
          f"{row['rss_mb']:,} MB {held}", flush=True)


def _run(kind: str, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_tier, args=(kind, *args, out))
    child.start()
    result = out.get()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the {kind} tier failed")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="records generated (a few are unlinkable)")
    parser.add_argument("--tail", type=int, default=10_000, help="the last events, timed on their own")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="caselink-scale-out-"))
    path = str(work / "records")
    started = time.perf_counter()
    child = mp.get_context("spawn").Process(target=_write_records, args=(path, args.records))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit("generating the synthetic records failed")
    total = sum(len(c) for c in _chunks(path))
    print(f"{total:,} records standardised and keyed in {time.perf_counter() - started:.0f} s", flush=True)

    rows = [_run("single", path, total, args.tail, 0, 1)]
    single = rows[0]
    _say(rows[0], args.tail)
    counts = sorted(set(args.shards) | {1})  # the one-shard runs write what the next tier reads
    for tier in ("blocks", "records"):
        for n in counts:
            for i in range(n):
                rows.append(_run(tier, path, total, args.tail, i, n))
                _say(rows[-1], args.tail)
    rows.append(_run("resolver", path, total, args.tail, 0, 1))
    resolver = rows[-1]
    _say(resolver, args.tail)
    if resolver["citizens"] != single["citizens"]:
        raise SystemExit(f"the resolver made {resolver['citizens']:,} citizens, the single writer "
                         f"{single['citizens']:,}: the sharded index is wrong")

    print(f"\n{'tier':<16}{'us/event':>10}{'last':>8}{'ratio':>8}{'MB':>8}{'ratio':>8}")
    for row in rows:
        ratio = row["tail_cpu_us_per_event"] / single["tail_cpu_us_per_event"]
        print(f"{_name(row):<16}{row['cpu_us_per_event']:>10}{row['tail_cpu_us_per_event']:>8}{ratio:>8.2f}"
              f"{row['rss_mb']:>8,}{row['rss_mb'] / single['rss_mb']:>8.2f}")
    for n in args.shards:
        tiers = {t: max(r["tail_cpu_us_per_event"] for r in rows if r["tier"] == t and r["shards"] == n)
                 for t in ("blocks", "records")}
        slowest = max(*tiers.values(), resolver["tail_cpu_us_per_event"])
        total_cpu = n * (tiers["blocks"] + tiers["records"]) + resolver["tail_cpu_us_per_event"]
        print(f"{n} shard(s) a tier: busiest block shard {tiers['blocks']} us, record shard {tiers['records']} us, "
              f"resolver {resolver['tail_cpu_us_per_event']} us an event near full size: a ceiling of "
              f"{1e6 / slowest:,.0f} events/s with a core for each process ({2 * n + 1} processes, "
              f"{total_cpu:.0f} us of CPU an event in all; single writer {single['tail_cpu_us_per_event']} us, "
              f"{1e6 / single['tail_cpu_us_per_event']:,.0f} events/s)")
    saved = save("scale_out", {"records": total, "tail": args.tail, "rows": rows})
    print(f"saved {saved}")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
