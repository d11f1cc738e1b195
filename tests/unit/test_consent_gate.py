"""The gate's decisions without Kafka: consent rules, pseudonymisation, retraction, audit."""

from datetime import timedelta

import pytest
from caselink.infra.topics import DISCLOSURES_TOPIC, GATE_RELEASED_TOPIC, purpose_topic
from caselink.schemas import default_serde
from caselink.streams.consent.evaluate import Refusal, View, compose_basis
from caselink.streams.consent.gate_core import GateCore
from caselink.streams.consent.policy import Policy, Purpose
from caselink.streams.consent.register import ConsentRegister, ConsentRejected

from tests.consent_fixtures import T0, consent, encode_case, linked_case, member, policy, pseudonymiser

serde = default_serde()


def gate(**kwargs) -> GateCore:
    now = [T0 + timedelta(days=1)]
    core = GateCore(kwargs.get("policy", policy()), kwargs.get("pseudonymiser", pseudonymiser()),
                    clock=lambda: now[0])
    core.now = now  # type: ignore[attr-defined]
    return core


def two_agency_citizen(core: GateCore, cid: str = "C1") -> None:
    core.apply_linked_case(cid, encode_case(linked_case(cid, [member("health", "H1"), member("social_care", "S1"),
                                                              member("police", "P1")])))


def on_topic(out, purpose: str) -> dict:
    """The latest value per key on a purpose topic, decoded (None: tombstone)."""
    latest: dict = {}
    for o in out:
        if o.topic == purpose_topic(purpose):
            latest[o.key.decode()] = serde.decode(o.value)[1] if o.value is not None else None
    return latest


def test_direct_care_releases_allowed_agencies_and_fields_only() -> None:
    core = gate()
    two_agency_citizen(core)
    released = on_topic(core.flush(), "direct_care")["C1"]
    assert {m["agency"] for m in released["members"]} == {"health", "social_care"}  # police not allowed
    fields = {f for m in released["members"] for f in m["fields"]}
    assert fields == {"given_names", "family_name", "date_of_birth", "sex", "identifiers.nhs_number", "address",
                      "phones"}
    assert not released["pseudonymised"] and released["citizen_ref"] == "C1"


def test_research_needs_explicit_consent_and_is_pseudonymised() -> None:
    core = gate()
    two_agency_citizen(core)
    assert "C1" not in str(on_topic(core.flush(), "research"))
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="research"))
    out = on_topic(core.flush(), "research")
    (ref, view), = out.items()
    assert ref.startswith("k1.") and view["pseudonymised"] and view["key_id"] == "k1"
    assert {m["agency"] for m in view["members"]} == {"health", "social_care"}  # police: not a research agency
    assert view["basis"] == "UK GDPR Art 6(1)(a) and 9(2)(a); explicit consent"  # the policy's text says it once
    text = str(view)
    for secret in ("Amelia", "Okafor", "2014-03-09", "9434765919", "Hyde Park", "LS6 2AB", "H1", "S1", "07700"):
        assert secret not in text
    assert {f for m in view["members"] for f in m["fields"]} == {"year_of_birth", "sex", "postcode_district"}


def test_pseudonyms_differ_between_purposes_and_keys() -> None:
    a, b = pseudonymiser("k1"), pseudonymiser("k2", b"another-key-0123456789")
    assert a.pseudonym("research", "citizen", "C1") != a.pseudonym("planning", "citizen", "C1")
    assert a.pseudonym("research", "citizen", "C1") != b.pseudonym("research", "citizen", "C1")
    assert a.pseudonym("research", "citizen", "C1") == pseudonymiser("k1").pseudonym("research", "citizen", "C1")
    assert "KEY" not in repr(a) and "key-0123" not in repr(a)


def test_withdrawal_retracts_with_audit() -> None:
    core = gate()
    two_agency_citizen(core)
    permit = consent("CITIZEN", citizen_id="C1", purpose="research", consent_id="cons-1")
    core.apply_consent(permit)
    first = core.flush()
    ref = next(iter(on_topic(first, "research")))
    core.apply_consent({**permit, "status": "WITHDRAWN", "recorded_at": permit["recorded_at"] + timedelta(hours=1)})
    out = core.flush()
    assert on_topic(out, "research") == {ref: None}
    audit = [serde.decode(o.value)[1] for o in out if o.topic == DISCLOSURES_TOPIC]
    assert [(d["action"], d["purpose"], d["recipient_key"]) for d in audit] == [("RETRACT", "research", ref)]
    assert "no consent" in audit[0]["reason"]
    assert [o.value for o in out if o.topic == GATE_RELEASED_TOPIC] == [None]


def test_late_older_version_of_a_consent_does_not_revive_it() -> None:
    core = gate()
    two_agency_citizen(core)
    permit = consent("CITIZEN", citizen_id="C1", purpose="research", consent_id="cons-1")
    withdrawn = {**permit, "status": "WITHDRAWN", "recorded_at": permit["recorded_at"] + timedelta(hours=1)}
    core.apply_consent(withdrawn)
    core.apply_consent(permit)  # delivered late
    assert on_topic(core.flush(), "research") == {}


def test_national_opt_out_by_nhs_number_applies_to_planning_not_direct_care() -> None:
    core = gate()
    two_agency_citizen(core)
    core.flush()
    core.apply_consent(consent("IDENTIFIER", scheme="nhs_number", value="943 476 5919", purpose="*",
                               decision="DENY", opt_out=True))
    out = core.flush()
    assert list(on_topic(out, "planning").values()) == [None]
    assert on_topic(out, "direct_care") == {}  # unchanged, so nothing re-sent


def test_objection_is_overridden_by_safeguarding_and_says_so() -> None:
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="*", decision="DENY", consent_id="obj-1"))
    out = core.flush()
    assert on_topic(out, "direct_care") == {}
    view = on_topic(out, "safeguarding")["C1"]
    assert view["basis"] == ("Children Act 1989 s.47; Care Act 2014 s.42; "
                             "statutory basis overrides recorded refusals: obj-1 (objection)")
    assert {m["agency"] for m in view["members"]} == {"health", "social_care", "police"}
    (audit,) = [serde.decode(o.value)[1] for o in out if o.topic == DISCLOSURES_TOPIC
                and serde.decode(o.value)[1]["purpose"] == "safeguarding"]
    assert audit["overrides"] == ["obj-1"] and audit["basis"] == view["basis"]


def test_field_objection_overridden_by_a_statutory_basis_is_named_with_the_full_one() -> None:
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="*", decision="DENY", consent_id="obj-1"))
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="safeguarding", decision="DENY",
                               fields=["phones"], consent_id="obj-2"))
    out = core.flush()
    view = on_topic(out, "safeguarding")["C1"]
    assert all(m["fields"]["phones"] == "07700 900123" for m in view["members"])  # released despite obj-2
    assert view["basis"].endswith("statutory basis overrides recorded refusals: obj-1 (objection), "
                                  "obj-2 (objection to phones)")
    released = {serde.decode(o.value)[1]["purpose"]: serde.decode(o.value)[1] for o in out
                if o.topic == DISCLOSURES_TOPIC}
    assert released["safeguarding"]["overrides"] == ["obj-1", "obj-2"]
    # Lifting the full objection: the field objection alone is still named, and the change is audited.
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="*", decision="DENY", consent_id="obj-1",
                               status="WITHDRAWN", recorded_at=T0 + timedelta(days=1)))
    out = core.flush()
    (audit,) = [serde.decode(o.value)[1] for o in out if o.topic == DISCLOSURES_TOPIC
                and serde.decode(o.value)[1]["purpose"] == "safeguarding"]
    assert audit["overrides"] == ["obj-2"] and "obj-1" not in audit["basis"] and "obj-2 (objection" in audit["basis"]
    assert "direct_care" in {serde.decode(o.value)[1]["purpose"] for o in out if o.topic == DISCLOSURES_TOPIC}
    # The retraction of an overriding release carries what it had overridden.
    core.set_policy(None)
    retracted = [serde.decode(o.value)[1] for o in core.flush() if o.topic == DISCLOSURES_TOPIC]
    assert [r["overrides"] for r in retracted if r["purpose"] == "safeguarding"] == [["obj-2"]]


def test_a_purpose_without_override_names_no_refusal() -> None:
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="*", decision="DENY", fields=["phones"]))
    out = core.flush()
    care = on_topic(out, "direct_care")["C1"]
    assert "overrides" not in care["basis"] and all("phones" not in m["fields"] for m in care["members"])
    assert all(serde.decode(o.value)[1]["overrides"] == [] for o in out if o.topic == DISCLOSURES_TOPIC
               and serde.decode(o.value)[1]["purpose"] != "safeguarding")


@pytest.mark.parametrize(("legal_basis", "required", "expected"), [
    ("Art 6(1)(a); explicit consent", True, "Art 6(1)(a); explicit consent"),
    ("Art 6(1)(a); Explicit Consent ", True, "Art 6(1)(a); Explicit Consent"),
    ("Art 6(1)(a)", True, "Art 6(1)(a); explicit consent"),
    ("Art 6(1)(e); Art 6(1)(e)", False, "Art 6(1)(e)"),
    ("Art 6(1)(a) and explicit consent", True, "Art 6(1)(a) and explicit consent; explicit consent"),
])
def test_basis_is_composed_without_repeating_a_phrase(legal_basis: str, required: bool, expected: str) -> None:
    assert compose_basis(legal_basis, required, {}) == expected


def test_record_scoped_refusal_covers_the_citizens_other_agencies() -> None:
    """A refusal about one record removes the whole citizen it resolves to, within its agencies."""
    core = gate()
    two_agency_citizen(core)  # health H1, social care S1, police P1
    core.flush()
    core.apply_consent(consent("RECORD", agency="police", record="P1", purpose="planning", decision="DENY"))
    out = core.flush()
    assert list(on_topic(out, "planning").values()) == [None]  # health and social care went with police
    assert on_topic(out, "direct_care") == {} and on_topic(out, "safeguarding") == {}  # other purposes unchanged
    # The same refusal limited to police records leaves the other agencies' records.
    core2 = gate()
    two_agency_citizen(core2)
    core2.apply_consent(consent("RECORD", agency="police", record="P1", purpose="planning", decision="DENY",
                                agencies=["police"]))
    (view,) = on_topic(core2.flush(), "planning").values()
    assert {m["agency"] for m in view["members"]} == {"health", "social_care"}


def test_record_scoped_field_refusal_covers_every_record_of_the_citizen() -> None:
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("RECORD", agency="health", record="H1", purpose="direct_care", decision="DENY",
                               fields=["phones"]))
    view = on_topic(core.flush(), "direct_care")["C1"]
    assert {m["agency"] for m in view["members"]} == {"health", "social_care"}
    assert all("phones" not in m["fields"] for m in view["members"])


def test_record_scoped_permit_covers_only_that_record() -> None:
    """A permission about one record does not travel across a link to the citizen's other records."""
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("RECORD", agency="health", record="H1", purpose="research"))
    (view,) = on_topic(core.flush(), "research").values()
    assert [m["agency"] for m in view["members"]] == ["health"]
    decision = core.decide("C1", "research")
    assert isinstance(decision, View) and decision.agencies == ["health"]
    # The same citizen's consent, recorded against the citizen id, covers both research agencies.
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="research"))
    (view,) = on_topic(core.flush(), "research").values()
    assert {m["agency"] for m in view["members"]} == {"health", "social_care"}


def test_identifier_scoped_permit_covers_the_records_carrying_it_and_an_opt_out_the_whole_citizen() -> None:
    core = gate()
    core.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1"),
                                                                member("social_care", "S1", nhs=None)])))
    core.apply_consent(consent("IDENTIFIER", scheme="nhs_number", value="9434765919", purpose="research"))
    out = core.flush()
    (view,) = on_topic(out, "research").values()
    assert [m["agency"] for m in view["members"]] == ["health"]  # S1 does not carry the number
    (planning,) = on_topic(out, "planning").values()
    assert {m["agency"] for m in planning["members"]} == {"health", "social_care"}
    core.apply_consent(consent("IDENTIFIER", scheme="nhs_number", value="943-476-5919", purpose="*",
                               decision="DENY", opt_out=True))
    out = core.flush()
    assert list(on_topic(out, "planning").values()) == [None]  # the social care record went too
    assert list(on_topic(out, "research").values()) == [None]


def test_field_level_objection_removes_only_those_fields() -> None:
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="direct_care", decision="DENY",
                               fields=["phones", "address"], agencies=["social_care"]))
    view = on_topic(core.flush(), "direct_care")["C1"]
    by_agency = {m["agency"]: set(m["fields"]) for m in view["members"]}
    assert "phones" in by_agency["health"] and "phones" not in by_agency["social_care"]
    assert "address" not in by_agency["social_care"]


def test_consent_follows_merges_and_splits() -> None:
    core = gate()
    core.apply_linked_case("C2", encode_case(linked_case("C2", [member("health", "H2", nhs=None)])))
    core.apply_consent(consent("CITIZEN", citizen_id="C2", purpose="research"))
    assert len(on_topic(core.flush(), "research")) == 1
    # C2 merges into C1: the consent about C2 now covers C1.
    core.apply_linked_case("C2", None)
    core.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1", nhs=None),
                                                                member("health", "H2", nhs=None)], ["C2"])))
    out = on_topic(core.flush(), "research")
    assert sorted(v is None for v in out.values()) == [False, True]  # C2's view retracted, C1's released
    # A record-level consent goes with its record when a split moves it away.
    core2 = gate()
    core2.apply_consent(consent("RECORD", agency="health", record="H2", purpose="research"))
    core2.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1", nhs=None),
                                                                 member("health", "H2", nhs=None)])))
    assert len(on_topic(core2.flush(), "research")) == 1
    core2.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1", nhs=None)], version=2)))
    core2.apply_linked_case("C3", encode_case(linked_case("C3", [member("health", "H2", nhs=None)])))
    out = on_topic(core2.flush(), "research")
    assert sorted(v is None for v in out.values()) == [False, True]
    assert core2.released.keys() == {("research", "C3")} | {k for k in core2.released if k[0] != "research"}


def test_sensitive_cases_and_weak_links_do_not_flow() -> None:
    core = gate()
    sealed = [{"case_id": "x", "case_type": "adoption", "status": "open", "opened_at": None, "closed_at": None,
               "sensitivity": "sealed"}]
    core.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1", cases=sealed),
                                                                member("social_care", "S1", weight=4.0)])))
    out = core.flush()
    care = on_topic(out, "direct_care")["C1"]
    assert [m["agency"] for m in care["members"]] == ["health"]  # 4.0 < 6.64
    assert care["members"][0]["cases"] == []  # sealed > restricted
    assert on_topic(out, "safeguarding")["C1"]["members"][0]["cases"][0]["case_type"] == "adoption"


def test_time_limited_consent_expires() -> None:
    core = gate()
    two_agency_citizen(core)
    start = core.now[0]
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="research", valid_to=start + timedelta(hours=1)))
    assert len(on_topic(core.flush(), "research")) == 1
    core.now[0] = start + timedelta(hours=2)
    core.tick(start, core.now[0])
    assert list(on_topic(core.flush(), "research").values()) == [None]


def test_no_key_or_no_policy_releases_nothing_and_retracts() -> None:
    core = gate(pseudonymiser=None)
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="research"))
    out = core.flush()
    assert on_topic(out, "research") == {} and on_topic(out, "direct_care")
    assert isinstance(core.decide("C1", "research"), Refusal)
    assert isinstance(core.decide("C1", "unknown_purpose"), Refusal)
    core.set_policy(None)
    out = core.flush()
    assert all(v is None for o in ("direct_care", "safeguarding") for v in on_topic(out, o).values())
    assert not core.released


def test_key_rotation_retracts_old_pseudonyms_and_releases_new() -> None:
    core = gate()
    two_agency_citizen(core)
    core.flush()
    old_refs = {r.ref for (p, _), r in core.released.items() if p == "planning"}
    core.set_pseudonymiser(pseudonymiser("k2", b"rotated-key-0123456789"))
    planning = on_topic(core.flush(), "planning")
    assert {k for k, v in planning.items() if v is None} == old_refs
    assert all(k.startswith("k2.") for k, v in planning.items() if v is not None)


def test_replaying_inputs_changes_nothing() -> None:
    core = gate()
    two_agency_citizen(core)
    c = consent("CITIZEN", citizen_id="C1", purpose="research")
    core.apply_consent(c)
    assert core.flush()
    two_agency_citizen(core)
    core.apply_consent(c)
    assert core.flush() == []


@pytest.mark.parametrize(("bad", "problem"), [
    ({"subject": {"kind": "CITIZEN", "citizen_id": None, "agency": None, "source_record_id": None, "scheme": None,
                  "value": None}}, "citizen_id is required"),
    ({"purpose": "marketing"}, "not in policy"),
    ({"national_opt_out": True, "decision": "PERMIT"}, "must have decision DENY"),
    ({"national_opt_out": True, "decision": "DENY", "fields": ["phones"]}, "always whole"),
    ({"fields": ["shoe_size"]}, "not policy field names"),
    ({"valid_from": T0, "valid_to": T0 - timedelta(days=1)}, "valid_to is not after"),
    ({"consent_id": ""}, "consent_id is empty"),
])
def test_malformed_consent_is_rejected_and_changes_nothing(bad: dict, problem: str) -> None:
    register = ConsentRegister()
    with pytest.raises(ConsentRejected, match=problem):
        register.apply({**consent("CITIZEN", citizen_id="C1"), **bad}, policy())
    assert not register.by_id and not register.by_subject


def test_view_is_what_the_topic_carries() -> None:
    core = gate()
    two_agency_citizen(core)
    view = core.decide("C1", "direct_care")
    assert isinstance(view, View)
    assert view.agencies == ["health", "social_care"] and "cases" in view.fields


def test_an_objection_to_a_field_covers_what_is_derived_from_it() -> None:
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="*", decision="DENY",
                               fields=["identifiers", "date_of_birth"]))
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="planning", decision="DENY", fields=["address"]))
    out = core.flush()
    care = on_topic(out, "direct_care")["C1"]
    assert all(not {"identifiers.nhs_number", "date_of_birth"} & set(m["fields"]) for m in care["members"])
    assert all("given_names" in m["fields"] for m in care["members"])
    (planning,) = on_topic(out, "planning").values()
    assert all(set(m["fields"]) == {"sex"} for m in planning["members"])  # no year of birth, no district


def test_a_permit_naming_a_field_lets_through_what_is_derived_from_it_and_a_scheme_only_that_scheme() -> None:
    core = gate()
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="research", fields=["date_of_birth"]))
    (view,) = on_topic(core.flush(), "research").values()
    assert all(set(m["fields"]) == {"year_of_birth"} for m in view["members"])
    assert all(m["cases"] == [] for m in view["members"])  # cases were not in the permit

    casework = Policy(version="t", purposes={"casework": Purpose(
        legal_basis="b", consent="not_required", national_opt_out=False, agencies=("*",), fields=("identifiers",))})
    core = gate(policy=casework)
    two_agency_citizen(core)
    core.apply_consent(consent("CITIZEN", citizen_id="C1", purpose="casework", decision="DENY",
                               fields=["identifiers.nhs_number"]))
    view = on_topic(core.flush(), "casework")["C1"]
    assert {a: set(m["fields"]) for a, m in ((m["agency"], m) for m in view["members"])} == {
        "health": {"identifiers.health_id"}, "social_care": {"identifiers.social_care_id"},
        "police": {"identifiers.police_id"}}
