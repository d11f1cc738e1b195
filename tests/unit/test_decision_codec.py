"""LinkDecision bytes assembled from cached field-weight encodings equal a plain encoding."""

from typing import Any

import pytest
from caselink.infra.topics import LINK_DECISIONS_TOPIC
from caselink.schemas import default_serde
from caselink.streams import decision_codec
from caselink.streams.decision_codec import DecisionCodec
from caselink.streams.linker_core import LinkerCore

from tests.linkage_fixtures import trained_model
from tests.unit.test_case_codec import _case_events


@pytest.mark.parametrize("cache_limit", [decision_codec.CACHE_LIMIT, 3])
def test_every_decision_is_the_plain_encoding_of_its_candidates_and_their_field_weights(
        monkeypatch: pytest.MonkeyPatch, cache_limit: int) -> None:
    monkeypatch.setattr(decision_codec, "CACHE_LIMIT", cache_limit)
    core = LinkerCore(trained_model())
    assert core.decisions.fast
    plain = DecisionCodec(core.serde, core.model)
    plain.fast = False  # the serde's own encoding of the same dicts
    fast_encode = core.decisions.encode
    compared = {"decisions": 0, "candidates": 0}

    def both(decision: dict[str, Any], candidates: list, record: Any, finite: Any) -> bytes:
        value = fast_encode(decision, candidates, record, finite)
        assert value == plain.encode(decision, candidates, record, finite)
        compared["decisions"] += 1
        compared["candidates"] += len(candidates) if record is not None else 0
        return value

    core.decisions.encode = both  # type: ignore[method-assign]
    serde = default_serde()
    for value in _case_events():
        for out in core.apply(value):
            if out.topic != LINK_DECISIONS_TOPIC:
                continue
            decision = serde.decode(out.value, expect="LinkDecision")[1]
            record = core.index.records.get(decision["record_key"])
            for c in decision["candidates"]:
                # What the decision says each field contributed is the model's explanation of the pair.
                other = core.index.records[c["record_key"]].record
                explained = core.model.explain(record.record, other)
                assert [(f["field"], f["level"], f["weight"]) for f in c["field_weights"]] == [
                    (f.field, f.level, f.weight) for f in explained]
                assert sum(f["weight"] for f in c["field_weights"]) == pytest.approx(c["match_weight"])
    assert compared["decisions"] == len(_case_events())
    assert compared["candidates"] > 100, compared


def test_a_schema_of_another_layout_is_left_to_the_serde() -> None:
    serde = default_serde()
    codec = DecisionCodec(serde, trained_model())
    raw = serde.schema("LinkDecision").raw
    layout = {**raw, "fields": [f for f in raw["fields"] if f["name"] != "candidates"]}
    assert not decision_codec._layout_matches(layout)
    assert decision_codec._layout_matches(raw) and codec.fast
