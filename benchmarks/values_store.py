"""What keeping each record's packed values on disk would cost the resolver (issue 20, the option
docs/architecture.md names for the review items' explanations and the review screen).

    python benchmarks/values_store.py [--records 1000000] [--batch 500]

Synthetic records are standardised and packed once (as the normaliser sends them). Then, in SQLite
(in the standard library) in a temporary folder: every record written by key, one transaction
per ``--batch`` changes as the linker commits a batch; every tenth written again (an update); then
10,000 reads of random keys (a review item or the review screen asks for two). CPU microseconds
per write and per read, the file's size, and the process's resident memory gained. Compared with
the resolver's own 8-9 µs an event (docs/benchmarks.md). Results: benchmarks/results/values_store.json.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import psutil
from common import save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    from caselink.linkage.blocking import blocking_keys
    from caselink.linkage.models import default_model
    from caselink.linkage.packed import pack
    from caselink.linkage.record import UnlinkableRecordError, standardise_person
    from caselink.linkage.synthetic import records_for_size

    rules = default_model().rules
    packed: list[tuple[str, bytes]] = []
    for item in records_for_size(args.records, seed=7):
        key = f"{item['agency']}:{item['source_record_id']}"
        try:
            record = standardise_person(key, item["person"], rules)
        except UnlinkableRecordError:
            continue
        packed.append((key, pack(record, blocking_keys(record, rules.typo_schemes), rules)))
    print(f"{len(packed):,} records packed, {sum(len(p) for _, p in packed) / len(packed):,.0f} bytes each", flush=True)

    folder = Path(tempfile.mkdtemp(prefix="caselink-values-"))
    path = folder / "values.sqlite"
    rss = psutil.Process().memory_info().rss
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; the link input is the log to replay
    db.execute("CREATE TABLE IF NOT EXISTS v (k TEXT PRIMARY KEY, p BLOB NOT NULL) WITHOUT ROWID")
    writes = packed + packed[::10]
    cpu = time.process_time()
    for i in range(0, len(writes), args.batch):
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?)", writes[i:i + args.batch])
        db.execute("COMMIT")
    write_us = (time.process_time() - cpu) / len(writes) * 1e6
    keys = [k for k, _ in random.Random(3).sample(packed, 10_000)]
    cpu = time.process_time()
    for key in keys:
        row = db.execute("SELECT p FROM v WHERE k = ?", (key,)).fetchone()
        assert row is not None
    read_us = (time.process_time() - cpu) / len(keys) * 1e6
    db.close()
    size_mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    gained = (psutil.Process().memory_info().rss - rss) / 1e6
    results = {"records": len(packed), "batch": args.batch, "write_cpu_us": round(write_us, 1),
               "read_cpu_us": round(read_us, 1), "file_mb": round(size_mb), "rss_gained_mb": round(gained)}
    print(f"SQLite: {write_us:.1f} µs of CPU a write ({len(writes):,} writes, {args.batch} a transaction), "
          f"{read_us:.1f} µs a read; {size_mb:,.0f} MB on disk; {gained:,.0f} MB more resident", flush=True)
    print(f"saved {save('values_store', results)}")


if __name__ == "__main__":
    main()
