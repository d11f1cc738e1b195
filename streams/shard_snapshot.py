"""Snapshots of a shard's state, so that a shard dealt its partitions again (a restart, a named
shard coming back) replays the link input only from the last one, not from the start.

Why: a shard's state is a function of the link input up to its position, and without a snapshot
every shard dealt partitions replayed the whole log (docs/benchmarks.md, "A shard restarted"). The
file is the linker snapshot's format (``snapshot_format``: MessagePack with a checked header, not
a pickle), written 0600 by a forked child (``snapshot.SnapshotWriter``), at a position the shard
has answered and committed.

What a snapshot is good for, checked before its body is read (otherwise the shard replays):

* the same tier, code, partition count, linkage rules (and, for scores, model), block size cap;
* partitions: it holds the partitions it was taken for; a shard dealt a subset keeps those and
  drops the rest (``keep_only``), one dealt any partition it does not hold replays;
* position: not past where the partitions' answers were committed;
* a block shard's blocks are keyed by the hashes of their keys, which are Python's ``hash()``
  of a str and differ between processes unless ``PYTHONHASHSEED`` is the same: a block shard with
  a data directory runs with a seed kept there (``caselink shard``), and the snapshot carries a
  probe hash that the loading process must reproduce.

A record shard's snapshot also says from which offset of ``caselink.link-found`` every block
answer its position still needs can be read again (``Coverage.resume_from``).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caselink.linkage.model import LinkageModel
from caselink.linkage.record import LinkRecord, share_values
from caselink.linkage.standardise import StdDate, StdPostcode
from caselink.streams.shard_core import BlockAnswers, RecordAnswers, made_with
from caselink.streams.snapshot import open_private
from caselink.streams.snapshot_format import (
    SnapshotTypes,
    code_of,
    collector_paused,
    read_header,
    read_verified_body,
    write_replacing,
)
from caselink.streams.snapshot_format import code_fingerprint as fingerprint_of

from caselink import linkage
from caselink.core.private import ensure_private_dir

log = logging.getLogger(__name__)

FORMAT = "caselink-shard-snapshot/1"
TYPES = SnapshotTypes([LinkRecord, StdDate, StdPostcode])
HASH_PROBE = "caselink block shard hash probe"
_LINKAGE = Path(linkage.__file__).resolve().parent
_STREAMS = Path(__file__).resolve().parent


_CODE = code_of(sorted(_LINKAGE.glob("*.py")) + [_STREAMS / name for name in (
    "shard_core.py", "shard_snapshot.py", "snapshot_format.py")])


def code_fingerprint() -> str:
    return fingerprint_of(_CODE)


def partitions_bits(partitions: frozenset[int] | set[int]) -> str:
    """A set of partitions as the hex digits of a bitmap: 2,500 characters at most for the
    10,000 partitions the settings allow, so it fits the snapshot's 4 KiB header (a list did not
    past about 740)."""
    return format(sum(1 << p for p in partitions), "x")


def bits_partitions(bits: str) -> frozenset[int]:
    n = int(bits, 16)
    return frozenset(p for p in range(n.bit_length()) if n >> p & 1)


def kept_hash_seed(folder: Path) -> str:
    """The ``PYTHONHASHSEED`` a block shard keeping its snapshots in ``folder`` runs with, so
    that its blocks, keyed by the hashes of their keys, mean the same after a restart: drawn once
    (1 to 2**32 - 1; 0 would turn hashing's randomisation off) and kept there, 0600."""
    ensure_private_dir(folder)
    path = folder / "blocks-hash-seed"
    if not path.exists():  # written whole, synced, then linked in: never a part of one
        tmp = folder / f"blocks-hash-seed.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{secrets.randbelow(2**32 - 1) + 1}\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process drew one first: that one is kept
        finally:
            tmp.unlink(missing_ok=True)
    with open_private(path) as f:
        seed: str = f.read().decode().strip()
    if not seed.isdigit() or not 1 <= int(seed) < 2**32:
        raise ValueError(f"{path} does not hold a hash seed (1 to 4294967295); remove it to draw a new one "
                         "(the snapshot beside it is then replayed)")
    return seed


def tier_of(answers: BlockAnswers | RecordAnswers) -> str:
    return "blocks" if isinstance(answers, BlockAnswers) else "records"


def shard_state(answers: BlockAnswers | RecordAnswers) -> dict[str, Any]:
    if isinstance(answers, BlockAnswers):
        blocks = answers.shard
        return {"versions": blocks.versions, "filed": blocks.filed, "blocks": blocks.blocking.blocks,
                "capped": blocks.blocking.capped, "capped_names": blocks.blocking.capped_names}
    records = answers.shard
    return {"versions": records.versions, "records": records.records, "present": records.present,
            "must_link": records.must_link, "compared": records.compared}


def write(path: Path, answers: BlockAnswers | RecordAnswers, position: int, extra: dict[str, Any] | None = None) -> int:
    """The shard's state at ``position`` to ``path`` (a temporary file renamed); its size.
    ``extra`` joins the header (the loop's own fields: where to read block answers from)."""
    shard = answers.shard
    tier = tier_of(answers)
    header = {"format": FORMAT, "fingerprint": code_fingerprint(), "tier": tier, "position": position,
              "partitions": shard.partitions, "owned": partitions_bits(shard.owned), "taken_at": time.time(),
              **(extra or {})}
    if isinstance(answers, BlockAnswers):
        header["max_block_size"] = answers.shard.blocking.max_block_size
        header["hash_probe"] = hash(HASH_PROBE)
    return write_replacing(path, shard_state(answers), TYPES, header)


@dataclass
class LoadedShard:
    answers: BlockAnswers | RecordAnswers
    position: int  # every link-input offset below this is applied
    owned: frozenset[int]  # what it holds (the partitions it was taken for, less any given up)
    header: dict[str, Any]
    seconds: float


def read(path: Path, tier: str, model: LinkageModel, partitions: int, max_block_size: int,
         owned: frozenset[int], committed: int, source: dict[str, Any] | None = None) -> LoadedShard | None:
    """The snapshot at ``path`` as the state of a ``tier`` shard owning ``owned``, or None (said
    why in the log) when there is none fit to use; ``committed``: the least position the owned
    partitions' answers were committed at, which the snapshot must not be past; ``source``: what
    the snapshot's header must say of where its log came from (the cluster, the app id)."""
    if not path.exists():
        return None
    started = time.monotonic()
    try:
        with open_private(path) as f:
            header = read_header(f)
            wanted: dict[str, Any] = {"format": FORMAT, "fingerprint": code_fingerprint(), "tier": tier,
                                      "partitions": partitions, "made_with": made_with(tier, model), **(source or {})}
            if tier == "blocks":
                wanted.update(max_block_size=max_block_size, hash_probe=hash(HASH_PROBE))
            differs = {k: (header.get(k), v) for k, v in wanted.items() if header.get(k) != v}
            held = bits_partitions(str(header.get("owned") or "0"))
            if differs:
                why = f"made by other code, settings or process: {sorted(differs)}"
            elif not owned <= held:
                why = f"it does not hold partitions {sorted(owned - held)}"
            elif int(header["position"]) > committed:
                why = f"its position {header['position']} is past the committed {committed}"
            else:
                why = ""
            if why:
                log.warning("%s shard snapshot %s not used (%s); replaying the link input", tier, path, why)
                return None
            with collector_paused():
                answers = restore(tier, model, read_verified_body(f, header, TYPES), held, partitions, max_block_size)
    except Exception as exc:  # noqa: BLE001 - any failure to read means: replay instead
        log.warning("%s shard snapshot %s could not be read (%s: %s); replaying the link input", tier, path,
                    type(exc).__name__, exc)
        return None
    if owned < held:
        answers.shard.keep_only(owned)
    return LoadedShard(answers, int(header["position"]), owned, header, time.monotonic() - started)


def restore(tier: str, model: LinkageModel, state: dict[str, Any], owned: frozenset[int], partitions: int,
            max_block_size: int) -> BlockAnswers | RecordAnswers:
    """The shard a snapshot's state came from, holding its values as a shard built by replaying
    does: decoding makes a new string for every appearance of a record key (in the versions, the
    filing, every block holding it), and a record's values each their own; a shard that replayed
    shares one key object a record and its records' repeating values (``share_values``), so the
    restored state is pointed at those, or it would take far more memory than the shard it
    replaces."""
    versions: dict[str, int] = state["versions"]
    key = {k: k for k in versions}.get  # every record the shard has seen is in its versions

    def one(k: str) -> str:
        return key(k) or k

    if tier == "blocks":
        blocks = BlockAnswers(owned, partitions, max_block_size)
        shard = blocks.shard
        shard.versions = versions
        shard.filed = {one(k): packed for k, packed in state["filed"].items()}
        blocking = shard.blocking
        blocking.blocks = {h: one(m) if type(m) is str else tuple(map(one, m)) if type(m) is tuple
                           else list(map(one, m)) for h, m in state["blocks"].items()}
        blocking.capped, blocking.capped_names = state["capped"], state["capped_names"]
        return blocks
    records = RecordAnswers(model, owned, partitions)
    rshard = records.shard
    rshard.versions = versions
    rshard.records = {}
    for k, r in state["records"].items():
        r.key = one(k)
        rshard.records[r.key] = share_values(r)
    rshard.present = {one(k) for k in state["present"]}
    rshard.must_link = {(one(a), one(b)) for a, b in state["must_link"]}
    rshard.compared = state["compared"]
    return records
