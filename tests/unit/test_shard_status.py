"""What `caselink status` calls unhealthy about the sharded index's tiers (``ops.shard_problems``)."""

from __future__ import annotations


def test_status_names_a_missing_tier_unowned_partitions_and_a_tier_behind_and_nothing_else() -> None:
    from caselink.ops import ShardTier, shard_problems

    member = {"instance_id": "blocks-0", "client_id": "c", "host": "h", "partitions": list(range(58))}
    healthy = ShardTier("blocks", "app-blocks-shards", "STABLE", [member], [], 990, 1000)
    assert shard_problems([healthy], expected=True, max_lag=100) == []
    missing = ShardTier("records", "app-records-shards", "EMPTY", [], list(range(60)), None, 1000)
    assert shard_problems([missing], expected=False, max_lag=100) == []  # not a sharded deployment
    assert shard_problems([missing], expected=True, max_lag=100) == [
        "no records shard is running (group app-records-shards): the resolver waits for its answers"]
    gaps = ShardTier("blocks", "g", "STABLE", [member], [3, 4, 5, 9], 990, 1000)
    assert shard_problems([gaps], expected=True, max_lag=100) == ["blocks shards: key partitions 3-5, 9 have no shard"]
    moving = ShardTier("blocks", "g", "PREPARING_REBALANCE", [member], [3], 990, 1000)
    assert shard_problems([moving], expected=True, max_lag=100) == []  # a rebalance under way
    behind = ShardTier("blocks", "g", "STABLE", [member], [], 10, 1000)
    assert shard_problems([behind], expected=True, max_lag=100) == [
        "blocks shards: answered to 10, 990 link-input messages behind"]
