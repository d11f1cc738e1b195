"""Linker snapshots: a restored core carries on exactly as the one it was taken from."""

import copy
import os
import time
from pathlib import Path

import pytest
from caselink.linkage.index import CitizenIndex
from caselink.schemas import default_serde
from caselink.streams import snapshot
from caselink.streams.linker_core import LinkerCore
from caselink.streams.snapshot import SnapshotWriter

from tests.linkage_fixtures import person, trained_model
from tests.unit.test_case_codec import _case_events
from tests.unit.test_linker_core import T0, event


def _log() -> list[bytes]:
    """Inserts, updates and deletes (from the case-codec test) with reviewer decisions among them."""
    events = _case_events()
    core = LinkerCore(trained_model())
    for e in events[:300]:
        core.apply(e)
    keys = sorted(core.index.records)
    serde = default_serde()
    verdicts = [serde.encode("ReviewDecision", {
        "decision_id": f"r{i}", "left_record": keys[i], "right_record": keys[i + 7], "same_person": i % 2 == 0,
        "decided_by": "tester", "reason": None, "decided_at": T0}) for i in range(0, 40, 5)]
    # Five records in the same blocks, then three of them deleted: a block capped at three members
    # (the small cap below) stays capped as it shrinks, which only its history says.
    names = ["Ann", "Bea", "Cal", "Dot", "Eve"]
    crowd = [event("health", f"CROWD{i}", 1, person(n, "Quill", "1971-05-06", postcode="YO1 7HH"))
             for i, n in enumerate(names)]
    crowd += [event("health", f"CROWD{i}", 2, None, op="DELETE") for i in range(3)]
    later = [event("health", "CROWD5", 1, person("Fay", "Quill", "1971-05-06", postcode="YO1 7HH"))]
    return crowd + events[:300] + verdicts + events[300:] + later


def _everything(core: LinkerCore) -> dict:
    index = core.index
    return {"clusters": index.clusters(), "citizens": {c: (sorted(x.members), x.merged_from)
                                                      for c, x in index.citizens.items()},
            "edges": index.edges, "review": index.review, "must": index.must_link, "cannot": index.cannot_link,
            "versions": index.versions, "retired": index.retired, "seq": index.seq,
            "capped": sorted(index.blocking.capped_names.values()), "capped_hashes": sorted(index.blocking.capped),
            "members": core.members,
            "citizen_versions": core.citizen_versions, "applied": core.applied}


@pytest.mark.parametrize("max_block_size", [200, 3])  # 3: blocks are capped, and records leave capped blocks
def test_a_restored_core_carries_on_exactly_as_the_original(tmp_path: Path, max_block_size: int) -> None:
    log = _log()
    cut = 350
    original = LinkerCore(trained_model(), max_block_size=max_block_size)
    for value in log[:cut]:
        original.apply(value)
    path = tmp_path / "linker.snapshot"
    assert snapshot.write(path, original, cut) > 0
    loaded = snapshot.read(path, trained_model(), lambda: LinkerCore(trained_model(), max_block_size=max_block_size))
    assert loaded is not None and loaded.position == cut
    restored = loaded.core
    assert _everything(restored) == _everything(original)
    if max_block_size == 3:
        blocking = original.index.blocking
        shrunk = [name for name in blocking.capped_names.values() if blocking.size(name) <= max_block_size]
        assert shrunk, "some capped block must have shrunk under the cap for this case to mean anything"
    for value in log[cut:]:
        assert restored.apply(value) == original.apply(value)
    assert _everything(restored) == _everything(original)


def test_a_snapshot_of_other_code_another_model_or_damaged_is_not_used(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "linker.snapshot"
    assert snapshot.read(path, trained_model()) is None  # none yet
    unwritable = LinkerCore(trained_model())
    unwritable.members = {"x": lambda: None}  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="may not be written"):
        snapshot.write(path, unwritable, 1)
    assert list(tmp_path.iterdir()) == []  # a failed write leaves nothing behind
    core = LinkerCore(trained_model())
    for value in _case_events()[:50]:
        core.apply(value)
    snapshot.write(path, core, 50)
    assert snapshot.read(path, trained_model()) is not None
    other_model = copy.copy(trained_model())  # the shared model is cached: never change it in place
    other_model.version = "another"
    assert snapshot.read(path, other_model) is None
    with monkeypatch.context() as m:
        m.setattr(snapshot, "code_fingerprint", lambda serde: "changed")
        assert snapshot.read(path, trained_model()) is None
    path.write_bytes(path.read_bytes()[:-100])
    assert snapshot.read(path, trained_model()) is None


def test_index_state_from_other_code_is_refused() -> None:
    model = trained_model()
    state = CitizenIndex(model).state()
    with pytest.raises(ValueError, match="does not fit"):
        CitizenIndex.from_state(model, {**state, "something_new": 1})
    with pytest.raises(ValueError, match="does not fit"):
        CitizenIndex.from_state(model, {k: v for k, v in state.items() if k != "review"})


def test_the_writer_forks_a_child_that_writes_it_while_the_parent_goes_on(tmp_path: Path) -> None:
    core = LinkerCore(trained_model())
    events = _case_events()
    for value in events[:100]:
        core.apply(value)
    writer = SnapshotWriter(tmp_path / "state" / "linker.snapshot")
    writer.path.parent.mkdir()
    (writer.path.parent / "linker.snapshot.12345.tmp").write_bytes(b"half a snapshot")  # a killed writer's
    before = time.time()
    writer.start(core, 100)
    for value in events[100:200]:  # the parent changes its index; the child writes the state at the fork
        core.apply(value)
    writer.wait(60)
    assert not writer.busy and writer.failures == 0
    assert writer.last["position"] == 100 and writer.last["bytes"] > 0
    loaded = snapshot.read(writer.path, trained_model())
    assert loaded is not None and loaded.core.applied == 100 and loaded.position == 100
    assert not [p for p in os.listdir(writer.path.parent) if p.endswith(".tmp")]
    assert writer.last["at"] >= before  # when this write ended, not an earlier one


# ---------------------------------------------------------------- D7: a data format, checked before decoding
def _written(tmp_path: Path, n: int = 50) -> Path:
    core = LinkerCore(trained_model())
    for value in _case_events()[:n]:
        core.apply(value)
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "linker.snapshot"
    snapshot.write(path, core, n)
    return path


def test_a_planted_pickle_runs_nothing_when_the_worker_starts(tmp_path: Path) -> None:
    """D7: the snapshot was a pickle, so a file planted as linker.snapshot ran code at start."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):  # what a pickle calls on load
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "linker.snapshot"
    path.write_bytes(pickle.dumps({"format": "caselink-linker-snapshot/1"}) + pickle.dumps(Payload()))
    path.chmod(0o600)
    assert snapshot.read(path, trained_model()) is None
    assert not marker.exists()


def test_nothing_is_decoded_before_the_header_and_checksum_match(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = _written(tmp_path)
    from caselink.streams import snapshot_format

    decoded: list[str] = []
    real_read_body = snapshot_format.read_body
    monkeypatch.setattr(snapshot_format, "read_body",
                        lambda f, types: decoded.append("body") or real_read_body(f, types))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one byte of the body damaged
    path.write_bytes(bytes(data))
    assert snapshot.read(path, trained_model()) is None and decoded == []
    path = _written(tmp_path / "again")
    other = copy.copy(trained_model())
    other.version = "another"
    verified: list[str] = []
    monkeypatch.setattr(snapshot_format, "verify_body", lambda f, header: verified.append("checksum"))
    assert snapshot.read(path, other) is None and verified == [] and decoded == []


def test_an_object_of_a_class_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    from caselink.streams.snapshot_format import SnapshotFormatError, SnapshotTypes, read_body, write_file

    class Innocent:
        __slots__ = ("x",)

        def __init__(self, x: int) -> None:
            self.x = x

    writer_types = SnapshotTypes([Innocent])
    path = tmp_path / "planted"
    write_file(path, {"index": {"records": {"k": Innocent(1)}}}, writer_types, {"position": 1})
    reader_types = SnapshotTypes([snapshot.RecordState])  # the reader's allow-list: Innocent is not on it
    with path.open("rb") as f, pytest.raises(SnapshotFormatError):
        f.seek(4096)
        read_body(f, reader_types)


def test_any_state_of_the_allowed_kinds_round_trips(tmp_path: Path) -> None:
    """Generic over what CitizenIndex.state() returns, so fields the linkage code adds are carried."""
    from datetime import UTC, datetime

    from caselink.linkage.index import Citizen
    from caselink.linkage.standardise import StdDate, StdPostcode
    from caselink.streams.case_codec import MemberParts
    from caselink.streams.snapshot_format import HEADER_BYTES, read_body, read_header, verify_body, write_file

    when = datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
    state = {
        "index": {"records": {"a": (1, "x"), "b": None}, "pairs": {("a", "b"): 1.5, ("b", "c"): -2.0},
                  "sets": {"a": {"b", "c"}, "d": frozenset({"e"})}, "nested": {"k": {"l": [1, 2, {"m": b"\0\1"}]}},
                  "empty": {}, "seq": 42, "flag": True, "ratio": 0.25, "nothing": None, "listed": ["x", ("y", 1)],
                  "must": {("a", "b")}, "new_field_added_later": {"z": [StdDate("19900101", True)]}},
        "members": {"a": MemberParts(b"head", b"tail", when)},
        "citizens": {"C1": Citizen(3, {"a", "b"}, ["C0"])},
        "postcodes": [StdPostcode("LS61AB", "LS6 1", "LS6", "LS"), StdPostcode("75001", None, None, None)],
        "applied": 7, "empty_top": {},
    }
    path = tmp_path / "state"
    write_file(path, state, snapshot.TYPES, {"position": 7})
    assert (path.stat().st_mode & 0o777) == 0o600
    with path.open("rb") as f:
        header = read_header(f)
        verify_body(f, header)
        f.seek(HEADER_BYTES)
        back = read_body(f, snapshot.TYPES)
    assert back == state
    assert back["index"]["new_field_added_later"]["z"][0].year == "1990"  # init=False fields carried too
    assert type(back["members"]["a"]) is MemberParts and back["members"]["a"].linked_at == when


def test_snapshot_files_are_private_and_a_file_others_may_write_is_not_read(tmp_path: Path) -> None:
    from caselink.core.private import UnsafeDirectoryError, ensure_private_dir

    path = _written(tmp_path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert snapshot.read(path, trained_model()) is not None
    path.chmod(0o666)
    assert snapshot.read(path, trained_model()) is None
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    ensure_private_dir(loose)
    assert (loose.stat().st_mode & 0o777) == 0o700
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(UnsafeDirectoryError, match="world-writable"):
        ensure_private_dir(open_to_all)
    fresh = ensure_private_dir(tmp_path / "new" / "data")
    assert (fresh.stat().st_mode & 0o777) == 0o700
