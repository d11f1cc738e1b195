"""Faults under load, each checked against a straight run: nothing lost, nothing duplicated.

The scenarios (tests/fault_scenarios.py) are shared with benchmarks/faults.py, which prints their
figures (in flight, stall seconds) for docs/operations.md; here only correctness is asserted. The
three-broker cluster losing a broker with the default settings is in test_pipeline.py.
"""

from __future__ import annotations

import pytest

from caselink.core.settings import Settings
from tests import fault_scenarios

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gate_killed_mid_transaction_the_standby_releases_each_view_once(pipeline_settings: Settings) -> None:
    seen = fault_scenarios.gate_killed_mid_transaction(pipeline_settings, citizens=4000)
    assert seen["in_flight"] > 0, "the kill must land while a transaction is open for this test to mean anything"
    # The open transaction is then aborted by the standby's fencing (its records only a read_uncommitted
    # reader sees: seen["aborted_records"]), unless the kill came as it was committing; either way it
    # is all or nothing, which is what the counts below check.
    assert (seen["lost"], seen["duplicated"], seen["unexpected"]) == (0, 0, 0), seen
    assert (seen["audit_missing"], seen["audit_duplicated"]) == (0, 0), seen


def test_normaliser_rebalances_under_load_lose_and_duplicate_nothing(pipeline_settings: Settings) -> None:
    seen = fault_scenarios.normalisers_rebalancing(pipeline_settings, events=12000, rate=1500)
    assert seen["in_flight"] > 0 and seen["sent_after_kill"] > 0, \
        "the last fault must land under load for this test to mean anything"
    assert (seen["lost"], seen["duplicated"], seen["citizens_differ_from_straight_run"]) == (0, 0, 0), seen


def test_the_brokers_disk_fills_the_pipeline_pauses_says_why_and_resumes_with_nothing_lost() -> None:
    why_not = fault_scenarios.can_mount_tmpfs()
    if why_not:
        pytest.skip(why_not)
    seen = fault_scenarios.disk_fills(events=6000)
    assert seen["in_flight"] > 0, "the disk must fill mid-stream for this test to mean anything"
    paused = seen["health_while_paused"]
    assert paused["status"] == "degraded" and "waiting" in paused["reason"], paused
    said = seen["status_while_paused"]
    assert said["exit_code"] == 1 and any("No space left on device" in p or "bytes free" in p
                                          for p in said["problems"]), said
    assert seen["healthy_again"]
    assert (seen["lost"], seen["duplicated"], seen["citizens_differ_from_straight_run"]) == (0, 0, 0), seen


def test_a_broker_killed_from_three_with_the_default_settings_loses_nothing() -> None:
    """kill -9 of the link input's leader under load; the topics have RF 3 from the cluster's defaults."""
    seen = fault_scenarios.broker_lost(events=8000, rate=1500)
    assert seen["replication_factor"] == 3
    assert seen["in_flight"] > 0, "the broker must go under load for this test to mean anything"
    assert (seen["lost"], seen["duplicated"], seen["citizens_differ_from_straight_run"]) == (0, 0, 0), seen
