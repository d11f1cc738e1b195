"""Linker snapshots: a restored core carries on exactly as the one it was taken from."""

import os
import pickle
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
    unpicklable = LinkerCore(trained_model())
    unpicklable.members = {"x": lambda: None}  # type: ignore[dict-item]
    with pytest.raises((pickle.PicklingError, AttributeError)):
        snapshot.write(path, unpicklable, 1)
    assert list(tmp_path.iterdir()) == []  # a failed write leaves nothing behind
    core = LinkerCore(trained_model())
    for value in _case_events()[:50]:
        core.apply(value)
    snapshot.write(path, core, 50)
    assert snapshot.read(path, trained_model()) is not None
    other_model = trained_model()
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
