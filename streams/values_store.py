"""The resolver's store of record values, on disk instead of in its memory.

Why: in sharded mode (``shards.enabled``) the worker's linker is the ordered resolver: it holds
the citizens, edges and identifiers but not the records' standardised values, which live in the
record shards (that is what keeps its memory at a third of the single writer's). A few of its
outputs still need values of a record other than the one being changed: a review item's field
weights, an undone verdict's pair score, the review screen's comparison, the model check. They are
kept here, written as each change is applied, packed as the normaliser packs them
(``linkage.packed``), and read by key.

SQLite (standard library) because it is a well-kept embedded key-value table with a page cache,
measured at 8 µs a write in transactions and 13 µs a read over 1,000,000 records
(``benchmarks/values_store.py``). The store is a cache of the link input, not a source of truth:
a resolver that rebuilds its index replays the log and refills it from empty, so it is written
without a journal or syncs (a crash loses nothing the replay does not write again).

Not thread-safe: the worker reads and writes it under the linker's lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from caselink.linkage.packed import pack, unpack
from caselink.linkage.record import LinkRecord
from caselink.linkage.rules import LinkageRules


class ValuesStore:
    """Each record's latest standardised values, by record key."""

    def __init__(self, path: Path | str, rules: LinkageRules) -> None:
        self.path = Path(path)
        self.rules = rules
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE IF NOT EXISTS record_values (key TEXT PRIMARY KEY, packed BLOB NOT NULL)"
                         " WITHOUT ROWID")
        self._open = False  # a transaction holds the writes since the last commit

    def clear(self) -> None:
        """Empty: the index it serves is being rebuilt from the start of the log."""
        self._begin()
        self._db.execute("DELETE FROM record_values")
        self.commit()

    def put(self, record: LinkRecord) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO record_values VALUES (?, ?)",
                         (record.key, pack(record, [], self.rules)))

    def delete(self, key: str) -> None:
        self._begin()
        self._db.execute("DELETE FROM record_values WHERE key = ?", (key,))

    def get(self, key: str) -> LinkRecord | None:
        row = self._db.execute("SELECT packed FROM record_values WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        unpacked = unpack(row[0], key, self.rules)
        if unpacked is None:  # written by other code or rules: the store is rebuilt with the index
            raise ValueError(f"the values stored for {key!r} in {self.path} were made by other code or rules")
        return unpacked[0]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM record_values").fetchone()[0])

    def commit(self) -> None:
        """Make the writes since the last commit one transaction (cheaper than one each)."""
        if self._open:
            self._db.execute("COMMIT")
            self._open = False

    def close(self) -> None:
        self.commit()
        self._db.close()

    def _begin(self) -> None:
        if not self._open:
            self._db.execute("BEGIN")
            self._open = True
