"""Incremental linking speed and memory, and how they grow with the index.

    python benchmarks/linkage_speed.py [--sizes 10000,100000,1000000] [--skip-splink]

One core, one process. For FEBRL4 (10,000 records) it links every record one at a time into the
index and reports records/s and per-record latency p50/p99. For each synthetic index size it loads
the index, then times linking 10,000 further records into it, and reports the index's memory: the
resident memory the measuring process gained from before the first record was loaded (records are
generated in a child process and streamed in, so no generator garbage is counted; the memory of
the 10,000 probe records and the model is in the baseline). Unpickled records are passed through
``share_values`` so that equal names, dates and postcodes are one object each, as they are for
records the worker builds with ``standardise_person``. Splink
(DuckDB) scoring one new record at a time against the FEBRL4 table (predict_between) is timed
beside it. Results: benchmarks/results/linkage_speed.json.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from caselink.linkage.index import CitizenIndex
from caselink.linkage.record import UnlinkableRecordError, share_values, standardise_person
from caselink.linkage.runtime import tune_gc_for_large_index
from caselink.linkage.synthetic import records_for_size
from caselink.linkage.training import train_model
from common import febrl4, febrl_person, percentile, save


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def _timed_inserts(index: CitizenIndex, records: list) -> dict[str, float]:
    latencies = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for r in records:
        t = time.perf_counter()
        index.upsert(r.key, r)
        latencies.append(time.perf_counter() - t)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    # Records per CPU second as well: on a shared machine the wall clock counts other work too.
    return {"records": len(records), "records_per_s": len(records) / elapsed,
            "records_per_cpu_s": len(records) / cpu,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def febrl_speed() -> tuple[dict[str, Any], Any, list]:
    a, b, _ = febrl4()
    records = []
    for df in (a, b):
        for row in df.itertuples():
            try:
                records.append(standardise_person(str(row.Index), febrl_person(row)))
            except UnlinkableRecordError:
                pass
    model = train_model(records, separate_address=True, version="febrl4")
    gc.collect()
    return _timed_inserts(CitizenIndex(model), records), model, records


CHUNK = 10_000


def _write_records(path: str, index_records: int, probe: int) -> None:
    """In a child process: generate and standardise the records, train the model, write them out.

    Keeps the raw generated data (and the garbage of making it) out of the measuring process, so
    the memory it gains while loading is the index and its records and nothing else.
    """
    import pickle

    data = records_for_size(index_records + probe, seed=99)
    records = [standardise_person(f"{d['agency']}:{d['source_record_id']}", d["person"]) for d in data]
    del data
    train_model(records[:200_000], version="speed").save(Path(path + ".model.json"))
    with open(path + ".probe", "wb") as f:
        pickle.dump(records[index_records:], f, protocol=pickle.HIGHEST_PROTOCOL)
    with open(path, "wb") as f:
        for start in range(0, index_records, CHUNK):
            pickle.dump(records[start:min(start + CHUNK, index_records)], f, protocol=pickle.HIGHEST_PROTOCOL)


def _chunks(path: str) -> Iterator[list]:
    import pickle

    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def synthetic_growth(sizes: list[int], probe: int = 10_000, max_block_size: int = 200) -> list[dict[str, Any]]:
    import multiprocessing as mp
    import pickle
    import tempfile

    from caselink.linkage.model import LinkageModel

    biggest = max(sizes)
    path = tempfile.mktemp(prefix="caselink-speed-")
    child = mp.get_context("spawn").Process(target=_write_records, args=(path, biggest, probe))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError("generating the synthetic records failed")
    model = LinkageModel.load(Path(path + ".model.json"))
    # The probe records come from the same population but are never part of the loaded index.
    with open(path + ".probe", "rb") as f:
        probe_records = [share_values(r) for r in pickle.load(f)]
    chunks = _chunks(path)
    gc.collect()
    base_rss = rss_mb()
    rows = []
    index = CitizenIndex(model, max_block_size=max_block_size)
    loaded = 0
    load_seconds = 0.0
    for size in sorted(sizes):
        started = time.perf_counter()
        while loaded < size:
            for r in next(chunks)[: size - loaded]:
                index.upsert(r.key, share_values(r))
                loaded += 1
        load_seconds += time.perf_counter() - started
        # Timed first, without forcing a collection: the first young collection after a full one
        # took 140 ms at 300,000 records, a cost the worker (which never forces one) does not pay
        # in the middle of linking. Memory is read after, with the probe taken out and collected.
        result = _timed_inserts(index, probe_records)
        for r in probe_records:  # take them out again so the next size starts clean
            index.delete(r.key)
        gc.collect()
        rss = rss_mb()
        rows.append({"index_size": size, **result, "rss_mb": rss, "index_mb": rss - base_rss,
                     "capped_keys": len(index.blocking.capped), "max_block_size": max_block_size,
                     "load_seconds_cumulative": load_seconds, "gc_thresholds": list(gc.get_threshold())})
        print(f"  index {size:>9,}: {result['records_per_s']:>8,.0f} records/s ({result['records_per_cpu_s']:,.0f} "
              f"per CPU second)  p50 {result['p50_ms']:.3f} ms"
              f"  p99 {result['p99_ms']:.3f} ms  index {rss - base_rss:,.0f} MB (process RSS {rss:,.0f} MB)",
              flush=True)
    for suffix in ("", ".probe", ".model.json"):
        Path(path + suffix).unlink(missing_ok=True)
    return rows


def splink_one_at_a_time(n_queries: int = 60) -> dict[str, Any]:
    import pandas as pd
    from linkage_accuracy import _splink_febrl_settings, _splink_train
    from splink import DuckDBAPI, Linker

    a, b, _ = febrl4()
    cols = ["given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state", "date_of_birth"]
    db = DuckDBAPI()
    table = pd.concat([a, b]).reset_index()[["rec_id", *cols]]
    existing = db.register(table.iloc[:-n_queries], dataset_display_name="existing")
    linker = Linker(existing, _splink_febrl_settings("dedupe_only"))
    _splink_train(linker)
    linker.table_management.compute_tf_table("given_name")
    linker.table_management.compute_tf_table("surname")
    linker.table_management.compute_tf_table("suburb")
    latencies = []
    for i in range(n_queries):
        one = db.register(table.iloc[[len(table) - n_queries + i]])
        t = time.perf_counter()
        linker.inference.predict_between(existing, one).as_pandas_dataframe()
        latencies.append(time.perf_counter() - t)
    return {"queries": n_queries, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--skip-splink", action="store_true")
    parser.add_argument("--max-block-size", type=int, default=200)
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.ERROR)
    tune_gc_for_large_index()  # as the worker does (linkage/runtime.py)
    results: dict[str, Any] = {}
    febrl, _model, _records = febrl_speed()
    results["febrl4_incremental"] = febrl
    print(f"FEBRL4, 10,000 records one at a time: {febrl['records_per_s']:,.0f} records/s, "
          f"p50 {febrl['p50_ms']:.3f} ms, p99 {febrl['p99_ms']:.3f} ms", flush=True)
    if not args.skip_splink:
        try:
            splink = splink_one_at_a_time()
            results["splink_predict_between"] = splink
            print(f"Splink predict_between, one record vs FEBRL4: p50 {splink['p50_ms']:.1f} ms, "
                  f"p99 {splink['p99_ms']:.1f} ms", flush=True)
        except Exception as exc:  # noqa: BLE001 - a peer failing must not hide our own figures
            results["splink_predict_between"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"Splink predict_between failed: {exc}")
    print("Synthetic index growth (linking 10,000 new records into an index of each size):")
    results["synthetic_growth"] = synthetic_growth([int(s) for s in args.sizes.split(",")],
                                                   max_block_size=args.max_block_size)
    print(f"saved {save(f'linkage_speed_cap{args.max_block_size}', results)}")


if __name__ == "__main__":
    main()
