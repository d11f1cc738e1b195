"""GatedCase messages assembled from the view's bytes equal a plain encoding of the record."""

from datetime import timedelta
from typing import Any

from caselink.schemas import default_serde
from caselink.streams.consent.evaluate import View
from caselink.streams.consent.gated_codec import DisclosureCodec, GatedCodec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.consent_fixtures import T0, fed_gate, pseudonymiser
from tests.depth import examples
from tests.unit.test_consent_oracle import consent_events, policies, world

serde = default_serde()
codec = GatedCodec(serde)


def views(policy: dict[str, Any], history: list, events: list) -> list[View]:
    core = fed_gate(policy, history, events, pseudonymiser(), T0)
    found = [core.decide(cid, name) for cid in core.cases for name in policy["purposes"]]
    return [v for v in found if isinstance(v, View)]


@settings(max_examples=examples(150), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_assembled_message_equals_the_plain_encoding(data: Any) -> None:
    policy = data.draw(policies)
    cases, survivor_of, history = data.draw(world())
    at = T0 + timedelta(milliseconds=data.draw(st.integers(0, 10**12)))
    for view in views(policy, history, data.draw(consent_events(policy, cases, list(survivor_of)))):
        assert codec.message(codec.view_bytes(view), "v#abc", at) == serde.encode("GatedCase", view.record("v#abc", at))


def test_a_value_the_compiled_writer_does_not_take_is_still_encoded_the_same() -> None:
    view = View("C1", "C1", "p", "b", False, None, [{"agency": "a", "record_ref": "a:1", "fields": {
        "given_names": "x" * 70000}, "cases": []}], ["a"], ["given_names"])
    assert codec.message(codec.view_bytes(view), "v", T0) == serde.encode("GatedCase", view.record("v", T0))


def test_digest_tells_views_apart_and_marks_itself() -> None:
    a = View("C1", "C1", "p", "b", False, None, [], [], [])
    b = View("C1", "C1", "p", "b2", False, None, [], [], [])
    assert codec.digest(codec.view_bytes(a)) != codec.digest(codec.view_bytes(b))
    assert codec.digest(codec.view_bytes(a)).startswith("b2:")


texts = st.text(max_size=30) | st.sampled_from(["research", "first release", "x" * 70000, "é" * 20000])
disclosures = st.fixed_dictionaries({
    "disclosure_id": texts, "citizen_id": texts, "purpose": st.sampled_from(["research", "planning"]),
    "action": st.sampled_from(["RELEASE", "RETRACT"]),
    "agencies": st.lists(st.sampled_from(["health", "police", "x" * 70000]), max_size=3),
    "fields": st.lists(texts, max_size=3), "basis": st.none() | texts, "reason": st.none() | texts,
    "overrides": st.lists(texts, max_size=2), "policy_version": texts,
    "recipient_topic": st.sampled_from(["caselink.cases.research", "caselink.cases.planning"]),
    "recipient_key": st.none() | texts,
    "at": st.integers(0, 10**12).map(lambda ms: T0 + timedelta(milliseconds=ms)),
})


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(disclosures, min_size=1, max_size=8), as_tuples=st.booleans())
def test_a_disclosure_written_field_by_field_equals_the_plain_encoding(records: list[dict[str, Any]],
                                                                      as_tuples: bool) -> None:
    """Each field written on its own, the repeated ones from memory (a small memory, so that it is
    also forgotten), with arrays as lists or as tuples: the serde's bytes for the record."""
    disclosure_codec = DisclosureCodec(serde)
    disclosure_codec.MEMO = 2
    for record in records + records:  # the second time, from memory
        given_ = {k: tuple(v) if as_tuples and isinstance(v, list) else v for k, v in record.items()}
        assert disclosure_codec.encode(given_) == serde.encode("Disclosure", record)
