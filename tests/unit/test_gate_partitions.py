"""The partitioned gate's pure parts: the transaction guard, positions, and the settings check."""

from __future__ import annotations

import threading
import time

import pytest
from caselink.streams.consent.gate_loop import merge_positions
from caselink.streams.consent.gate_membership import TransactionGuard

from caselink.core.settings import ConsentSettings


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
