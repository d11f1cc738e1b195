"""Comparing a rebuilt index with the live one."""

from caselink.rebuild import compare


def fs(*keys: str) -> frozenset[str]:
    return frozenset(keys)


def test_identical_partitions_report_nothing() -> None:
    live = {"C1": fs("a", "b"), "C2": fs("c")}
    result = compare(live, {"X": fs("a", "b"), "Y": fs("c")})  # ids may differ; partitions are what count
    assert result.identical and result.unchanged == 2


def test_merges_splits_and_changes_are_told_apart() -> None:
    live = {"C1": fs("a", "b"), "C2": fs("c"), "C3": fs("d", "e"), "C4": fs("f", "g")}
    rebuilt = {"N1": fs("a", "b", "c"), "N3": fs("d"), "N4": fs("e"), "N5": fs("f"), "N6": fs("g", "h")}
    result = compare(live, rebuilt)
    assert {m["live"] for m in result.merged} == {"C1", "C2"}
    assert {s["live"] for s in result.split} == {"C3", "C4"}
    assert result.new_records == 1 and not result.identical
    summary = result.summary(examples=1)
    assert summary["merged"] == 2 and len(summary["examples"]["merged"]) == 1
