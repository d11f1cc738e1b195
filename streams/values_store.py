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
(``benchmarks/values_store.py``). The store is a cache of the link input, not a source of truth,
so it is written without a journal or syncs: a crash loses nothing a replay does not write again.

Each value is kept with the link-input offset that wrote it, so the store can be put back to any
position since the last snapshot of the index (``rewind``): a resolver that loads its snapshot at
position P drops what was written from P on and replays from there, exactly as the index does.
Older values are dropped once a snapshot past them is written (``compact``). ``store_id`` names
the store's contents since it was last emptied; a snapshot records it and is used only with the
same store (an emptied store, or another one, cannot be rewound to it).

Not thread-safe: the worker reads and writes it under the linker's lock.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from caselink.linkage.packed import pack, unpack
from caselink.linkage.record import LinkRecord
from caselink.linkage.rules import LinkageRules


class ValuesStore:
    """Each record's values by record key, as of each link-input offset since the last compaction."""

    def __init__(self, path: Path | str, rules: LinkageRules) -> None:
        self.path = Path(path)
        self.rules = rules
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        # packed NULL: the record left the index at that offset
        self._db.execute("CREATE TABLE IF NOT EXISTS record_values (key TEXT, seq INTEGER, packed BLOB, "
                         "PRIMARY KEY (key, seq)) WITHOUT ROWID")
        self._db.execute("CREATE TABLE IF NOT EXISTS store (name TEXT PRIMARY KEY, value TEXT)")
        row = self._db.execute("SELECT value FROM store WHERE name = 'id'").fetchone()
        self.store_id: str = row[0] if row is not None else self._new_id()
        # Writes since the last commit, written together at the commit (one executemany, not a
        # call per record): key -> (offset, bytes or None for a record that left).
        self._pending: dict[str, tuple[int, bytes | None]] = {}

    def _new_id(self) -> str:
        store_id = uuid.uuid4().hex
        self._db.execute("INSERT OR REPLACE INTO store VALUES ('id', ?)", (store_id,))
        return store_id

    def clear(self) -> None:
        """Empty: the index it serves is being rebuilt from the start of the log."""
        self._pending.clear()
        self._db.execute("DELETE FROM record_values")
        self.store_id = self._new_id()

    def put(self, record: LinkRecord, packed: bytes | None = None, seq: int = -1) -> None:
        """``record``'s values as of link-input offset ``seq``. ``packed``: the bytes ``record``
        was unpacked from (``linkage.packed``), stored as they are; without them it is packed here."""
        self._pending[record.key] = (seq, packed if packed is not None else pack(record, [], self.rules))

    def delete(self, key: str, seq: int = -1) -> None:
        self._pending[key] = (seq, None)

    def get(self, key: str) -> LinkRecord | None:
        if key in self._pending:
            data = self._pending[key][1]
        else:
            row = self._db.execute("SELECT packed FROM record_values WHERE key = ? ORDER BY seq DESC LIMIT 1",
                                   (key,)).fetchone()
            data = None if row is None else row[0]
        if data is None:
            return None
        unpacked = unpack(data, key, self.rules)
        if unpacked is None:  # written by other code or rules: the store is rebuilt with the index
            raise ValueError(f"the values stored for {key!r} in {self.path} were made by other code or rules")
        return unpacked[0]

    def __len__(self) -> int:
        """How many records have values (the ones in the index)."""
        self.commit()
        return int(self._db.execute(
            "SELECT count(*) FROM record_values AS v WHERE packed IS NOT NULL AND seq = "
            "(SELECT max(seq) FROM record_values WHERE key = v.key)").fetchone()[0])

    def commit(self) -> None:
        """Write the changes since the last commit, in one transaction."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO record_values VALUES (?, ?, ?)",
                       [(key, seq, data) for key, (seq, data) in pending.items()])
        db.execute("COMMIT")

    def rewind(self, position: int) -> None:
        """Back to what it held when every offset below ``position`` had been applied."""
        self._pending.clear()
        self._db.execute("DELETE FROM record_values WHERE seq >= ?", (position,))

    def compact(self, position: int) -> int:
        """Drop what no rewind to ``position`` or later can need: values replaced below it, and
        records that left below it. Returns how many rows went."""
        self.commit()
        db = self._db
        db.execute("BEGIN")
        replaced = db.execute(
            "DELETE FROM record_values WHERE seq < ? AND seq < (SELECT max(seq) FROM record_values AS newer "
            "WHERE newer.key = record_values.key AND newer.seq < ?)", (position, position)).rowcount
        left = db.execute("DELETE FROM record_values WHERE packed IS NULL AND seq < ?", (position,)).rowcount
        db.execute("COMMIT")
        return int(replaced) + int(left)

    def close(self) -> None:
        self.commit()
        self._db.close()
