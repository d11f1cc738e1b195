"""What counts as a connector checkpoint: anything else is skipped and reported, never a crash."""

import pytest
from caselink.connectors.checkpoints import checkpoint_problem

GOOD = {"connector": "file:health", "files": {"/x/a.csv": {"file": "/x/a.csv", "size": 10, "mtime_ns": 5,
                                                            "rows": 3, "complete": False, "at": "2026-11-01"}}}


def test_a_checkpoint_a_connector_wrote_is_fine() -> None:
    assert checkpoint_problem(GOOD) is None
    assert checkpoint_problem({}) is None  # no files yet


@pytest.mark.parametrize("value, words", [
    ([1, 2], "not a JSON object"),
    ("text", "not a JSON object"),
    ({"files": []}, "files is not an object"),
    ({"files": {"a": 7}}, "is not an object"),
    ({"files": {"a": {"rows": "9", "size": 1, "mtime_ns": 1}}}, "rows is not a whole number"),
    ({"files": {"a": {"rows": -1, "size": 1, "mtime_ns": 1}}}, "rows is not a whole number"),
    ({"files": {"a": {"rows": True, "size": 1, "mtime_ns": 1}}}, "rows is not a whole number"),
    ({"files": {"a": {"rows": 1, "mtime_ns": 1}}}, "size is not a whole number"),
])
def test_anything_else_is_a_damaged_checkpoint(value: object, words: str) -> None:
    assert words in (checkpoint_problem(value) or "")
