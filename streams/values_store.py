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
        # Writes since the last commit, written together at the commit (one executemany, not a
        # call per record); None: a delete.
        self._pending: dict[str, bytes | None] = {}

    def clear(self) -> None:
        """Empty: the index it serves is being rebuilt from the start of the log."""
        self._pending.clear()
        self._db.execute("DELETE FROM record_values")

    def put(self, record: LinkRecord, packed: bytes | None = None) -> None:
        """``packed``: the bytes ``record`` was unpacked from (``linkage.packed``), stored as they
        are; without them the record is packed here."""
        self._pending[record.key] = packed if packed is not None else pack(record, [], self.rules)

    def delete(self, key: str) -> None:
        self._pending[key] = None

    def get(self, key: str) -> LinkRecord | None:
        if key in self._pending:
            data = self._pending[key]
        else:
            row = self._db.execute("SELECT packed FROM record_values WHERE key = ?", (key,)).fetchone()
            data = None if row is None else row[0]
        if data is None:
            return None
        unpacked = unpack(data, key, self.rules)
        if unpacked is None:  # written by other code or rules: the store is rebuilt with the index
            raise ValueError(f"the values stored for {key!r} in {self.path} were made by other code or rules")
        return unpacked[0]

    def __len__(self) -> int:
        self.commit()
        return int(self._db.execute("SELECT count(*) FROM record_values").fetchone()[0])

    def commit(self) -> None:
        """Write the changes since the last commit, in one transaction."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO record_values VALUES (?, ?)",
                       [(k, v) for k, v in pending.items() if v is not None])
        db.executemany("DELETE FROM record_values WHERE key = ?", [(k,) for k, v in pending.items() if v is None])
        db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        self._db.close()
