"""The partitioned gate's pure parts: the transaction guard, positions, and the settings check."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from caselink.streams.consent.gate_core import GateCore
from caselink.streams.consent.gate_loop import merge_positions
from caselink.streams.consent.gate_membership import TransactionGuard
from caselink.streams.consent.pseudonym import Pseudonymiser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caselink.core.kafka import key_partition
from caselink.core.settings import ConsentSettings
from tests.consent_fixtures import encode_case, fed_gate
from tests.depth import examples
from tests.unit.test_consent_oracle import KEY, KEY_ID, NOW, consent_events, policies, topics_after, world
from tests.unit.test_gate_incremental import EDITS, edited


def test_a_change_of_partitions_waits_for_the_open_transaction_and_then_none_begins_for_the_old_ones() -> None:
    guard = TransactionGuard()
    assert guard.begin(0)
    changed = threading.Event()
    change = threading.Thread(target=lambda: (guard.change(), changed.set()))
    change.start()
    time.sleep(0.2)
    assert not changed.is_set()  # the transaction is still open
    guard.end()
    change.join(5)
    assert changed.is_set() and guard.epoch == 1
    assert not guard.begin(0)  # begun for the assignment before: refused, nothing held
    assert guard.begin(1)
    guard.end()
    guard.end()  # a second end (an abort after a commit failed) releases nothing twice
    assert guard.begin(1)
    guard.end()


def test_positions_are_the_furthest_any_gate_recorded() -> None:
    positions = {"caselink.linked-cases:0": 10, "caselink.consent-events:0": 4}
    merge_positions(positions, {"caselink.linked-cases:0": 7, "caselink.linked-cases:1": 3})
    merge_positions(positions, {"caselink.consent-events:0": 9})
    assert positions == {"caselink.linked-cases:0": 10, "caselink.linked-cases:1": 3, "caselink.consent-events:0": 9}


def test_a_partitioned_gate_inside_the_worker_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot be combined with consent\.in_worker"):
        ConsentSettings(partitioned=True, in_worker=True)
    assert ConsentSettings(partitioned=True).partitioned


def test_a_committer_closed_with_a_transaction_pending_frees_the_guard() -> None:
    """A gate failing between two transactions closes its committer without waiting: the guard
    must still be free, or the next run's first transaction (and any rebalance) would wait forever."""
    from caselink.streams.consent.gate_loop import Committer

    class SlowProducer:
        def commit_transaction(self, timeout: float) -> None:
            time.sleep(0.1)

    guard = TransactionGuard()
    committer = Committer(SlowProducer(), guard.end)  # type: ignore[arg-type]
    assert guard.begin(0)
    committer.commit(lambda: None)
    committer.close()
    assert guard._lock.acquire(timeout=2)  # free again (without the fix: held for good)
    guard._lock.release()


def _transitive(history: list[tuple[str, Any]], survivor_of: dict[str, str]) -> list[tuple[str, Any]]:
    """The history as the linker now publishes it: a live case names every id retired into it."""
    def ancestors(cid: str) -> list[str]:
        direct = sorted(r for r, s in survivor_of.items() if s == cid)
        return [a for r in direct for a in (r, *ancestors(r))]

    return [(cid, None if case is None or cid in survivor_of else {**case, "merged_from": ancestors(cid)})
            if case is None or cid not in survivor_of else (cid, case) for cid, case in history]


def _state(core: Any, retired: list[str]) -> tuple[Any, ...]:
    """What decides releases. Where a retired id leads is compared as the live citizen it reaches
    (a gate that read the middle citizen's case, now a tombstone, also knows that step; it reaches
    no live citizen of its own either way)."""
    reaches = {r: core.resolve(r) if core.resolve(r) in core.cases else None for r in retired}
    return (core.cases, core.subjects, core.owners, core.absorbed, core.released, core.released_purposes, reaches)


@settings(max_examples=examples(200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_gate_that_gives_up_partitions_holds_and_releases_what_one_built_for_the_rest_does(data: Any) -> None:
    """What a partitioned gate keeps when it is dealt fewer partitions (``GateCore.keep_only``)
    equals what a gate rebuilt from the kept partitions' cases, every consent and the bookkeeping
    holds; both then release the same for later changes, and the rebuilt one nothing at first."""
    policy_ = data.draw(policies)
    cases, survivor_of, history = data.draw(world())
    history = _transitive(history, survivor_of)
    cases = {cid: case for cid, case in history if cid in cases}
    events = data.draw(consent_events(policy_, cases, list(survivor_of)))
    partitions = data.draw(st.integers(2, 4))
    kept = frozenset(data.draw(st.sets(st.integers(0, partitions - 1), max_size=partitions - 1)))

    def owns(cid: str) -> bool:
        return key_partition(cid.encode(), partitions) in kept

    def gate(items: list[tuple[str, Any]]) -> GateCore:
        return fed_gate(policy_, items, events, Pseudonymiser(KEY, KEY_ID), NOW)

    retired = sorted(survivor_of)
    whole = gate(history)
    whole.flush()
    bookkeeping = [(f"{p}|{c}".encode(), r.dump()) for (p, c), r in whole.released.items() if owns(c)]
    whole.keep_only(owns)

    rebuilt_from = gate([(cid, value) for cid, value in history if owns(cid)])
    for key, value in bookkeeping:
        rebuilt_from.load_released(key, value)
    assert [o for o in rebuilt_from.flush() if o.topic.startswith("caselink.cases.")] == []
    assert _state(whole, retired) == _state(rebuilt_from, retired)

    edits = [(cid, edited(case, data.draw(st.sampled_from(EDITS)), i))
             for i, (cid, case) in enumerate(sorted(cases.items())) if owns(cid)]
    for core in (whole, rebuilt_from):
        for cid, value in edits:
            core.apply_linked_case(cid, encode_case(value) if value is not None else None)
    assert topics_after(whole.flush()) == topics_after(rebuilt_from.flush())
    assert _state(whole, retired) == _state(rebuilt_from, retired)


def test_a_named_gate_keeps_its_transactional_id_across_restarts_so_its_next_start_aborts_what_it_left_open() -> None:
    from caselink.streams.consent.gate_loop import GateLoop
    from caselink.streams.consent.gate_membership import Membership

    from caselink.core.settings import Settings

    def ids(consent: ConsentSettings) -> set[str]:
        settings = Settings(consent=consent)
        return {GateLoop(settings, is_leader=lambda: True, membership=Membership(settings))._transactional_id
                for _ in range(2)}

    assert ids(ConsentSettings(partitioned=True, instance_id="gate-0")) == {"caselink-gate-gate-0"}
    assert len(ids(ConsentSettings(partitioned=True))) == 2  # unnamed: a process of its own each time
