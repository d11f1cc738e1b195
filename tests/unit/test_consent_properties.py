"""Property tests over generated citizens, consents and policies (hypothesis).

Whatever the inputs: no output carries a field or agency its purpose forbids; pseudonymised output
carries no identifier, name, date of birth or address; where consent is required every released
agency has a permit; withdrawing every consent retracts; the audit matches the releases one to one.
"""

from datetime import timedelta
from typing import Any

from caselink.infra.topics import DISCLOSURES_TOPIC, purpose_topic
from caselink.schemas import default_serde
from caselink.streams.consent.gate_core import GateCore
from caselink.streams.consent.policy import QUASI_FIELDS, Policy, Purpose
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.consent_fixtures import T0, consent, encode_case, linked_case, member, pseudonymiser
from tests.depth import examples

serde = default_serde()
AGENCIES = ["health", "social_care", "police", "education"]
ALL_FIELDS = ["given_names", "family_name", "other_names", "date_of_birth", "year_of_birth", "sex",
              "identifiers", "identifiers.nhs_number", "address", "postcode", "postcode_district", "phones",
              "emails", "cases"]
names = st.sampled_from(["Amelia", "Oluwaseun", "Zofia", "Harpreet", "Siobhan", "Mohammed"])
surnames = st.sampled_from(["Okafor", "Kowalczyk", "Sandhu", "Ni Bhriain", "Haddad", "Thorne"])
nhs = st.sampled_from(["9434765919", "4010232137", "9990001112", None])


@st.composite
def purposes(draw: Any) -> Purpose:
    pseudo = draw(st.booleans())
    allowed = sorted(QUASI_FIELDS) if pseudo else ALL_FIELDS
    consent_mode = draw(st.sampled_from(["required", "not_required"]))
    return Purpose(legal_basis="basis", consent=consent_mode, national_opt_out=draw(st.booleans()),
                   statutory_override=consent_mode == "not_required" and draw(st.booleans()),
                   agencies=tuple(draw(st.lists(st.sampled_from(AGENCIES), min_size=1, max_size=4, unique=True))),
                   fields=tuple(draw(st.lists(st.sampled_from(allowed), min_size=1, unique=True))),
                   min_match_weight=draw(st.sampled_from([0.0, 5.0, 15.0])),
                   max_sensitivity=draw(st.sampled_from(["normal", "restricted", "sealed"])), pseudonymise=pseudo)


policies = st.builds(lambda ps: Policy(version="gen", purposes={f"p{i}": p for i, p in enumerate(ps)}),
                     st.lists(purposes(), min_size=1, max_size=4))


@st.composite
def citizens(draw: Any) -> list[dict[str, Any]]:
    out = []
    for c in range(draw(st.integers(1, 4))):
        members = []
        for m in range(draw(st.integers(1, 3))):
            agency = draw(st.sampled_from(AGENCIES))
            cases = [{"case_id": f"case-{c}-{m}", "case_type": "t", "status": "open", "opened_at": None,
                      "closed_at": None, "sensitivity": draw(st.sampled_from(["normal", "restricted", "sealed"]))}]
            members.append(member(agency, f"R{c}{m}", draw(st.sampled_from([2.0, 10.0, 30.0])), given=draw(names),
                                  family=draw(surnames), nhs=draw(nhs), dob=f"19{draw(st.integers(10, 99))}-0"
                                  f"{draw(st.integers(1, 9))}-1{draw(st.integers(0, 9))}", cases=cases))
        out.append(linked_case(f"C{c}", members))
    return out


@st.composite
def consents(draw: Any, policy: Policy, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events = []
    for _ in range(draw(st.integers(0, 6))):
        case = draw(st.sampled_from(cases))
        m = draw(st.sampled_from(case["members"]))
        kind = draw(st.sampled_from(["CITIZEN", "RECORD", "IDENTIFIER"]))
        opt_out = draw(st.booleans()) if kind == "IDENTIFIER" else False
        subject: dict[str, Any] = {"citizen_id": case["citizen_id"]} if kind == "CITIZEN" else (
            {"agency": m["agency"], "record": m["source_record_id"]} if kind == "RECORD" else
            {"scheme": f"{m['agency']}_id", "value": m["source_record_id"]})
        events.append(consent(kind, **subject, purpose=draw(st.sampled_from([*policy.purposes, "*"])),
                              decision="DENY" if opt_out else draw(st.sampled_from(["PERMIT", "DENY"])),
                              opt_out=opt_out,
                              agencies=draw(st.lists(st.sampled_from(AGENCIES), max_size=2, unique=True)),
                              fields=[] if opt_out else draw(st.lists(st.sampled_from(ALL_FIELDS), max_size=2,
                                                                      unique=True))))
    return events


def run(policy: Policy, cases: list[dict[str, Any]], events: list[dict[str, Any]]) -> tuple[GateCore, list]:
    core = GateCore(policy, pseudonymiser(), clock=lambda: T0 + timedelta(days=1))
    for case in cases:
        core.apply_linked_case(case["citizen_id"], encode_case(case))
    for event in events:
        core.apply_consent(event)
    return core, core.flush()


def scenario(data: Any) -> tuple[Policy, list[dict[str, Any]], list[dict[str, Any]], GateCore, list]:
    """A generated policy, citizens and consents, applied: (policy, cases, events, core, outputs)."""
    policy = data.draw(policies)
    cases = data.draw(citizens())
    events = data.draw(consents(policy, cases))
    return (policy, cases, events, *run(policy, cases, events))


def secrets_of(case: dict[str, Any]) -> set[str]:
    found = {case["citizen_id"]}
    for m in case["members"]:
        p = m["person"]
        found |= {p["given_names"], p["family_name"], p["date_of_birth"], m["source_record_id"],
                  *p["identifiers"].values(), *p["addresses"][0]["lines"], p["addresses"][0]["postcode"],
                  m["cases"][0]["case_id"]}
    return {s for s in found if s}


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_outputs_never_exceed_policy_and_consent(data: Any) -> None:
    policy, cases, _events, core, out = scenario(data)
    by_ref = {}
    for o in out:
        if o.topic.startswith("caselink.cases.") and o.value is not None:
            by_ref[(o.topic, o.key)] = serde.decode(o.value)[1]
    for (topic, _key), view in by_ref.items():
        name = view["purpose"]
        purpose = policy.purposes[name]
        assert topic == purpose_topic(name)
        for m in view["members"]:
            assert purpose.allows_agency(m["agency"])
            assert all(f in purpose.fields or f.split(".")[0] in purpose.fields for f in m["fields"])
            assert all(purpose.allows_sensitivity(c["sensitivity"]) for c in m["cases"])
            if "cases" not in purpose.fields:
                assert m["cases"] == []
        if purpose.pseudonymise:
            text = repr(view)
            for case in cases:
                for secret in secrets_of(case):
                    assert secret not in text, (secret, view)
        if purpose.consent == "required":
            citizen = next(c for c in cases if core.released.get((name, c["citizen_id"]))
                           and core.released[(name, c["citizen_id"])].ref == view["citizen_ref"])
            provisions = core.register.about(core.subjects[citizen["citizen_id"]])
            for m in view["members"]:
                assert any(p.permit and p.covers(name, m["agency"]) for p in provisions)


@settings(max_examples=examples(100), deadline=None)
@given(data=st.data())
def test_audit_matches_releases_and_withdrawal_retracts(data: Any) -> None:
    policy, _cases, events, core, out = scenario(data)
    # Withdraw every consent: what needed consent must be retracted.
    later = T0 + timedelta(days=2)
    for event in events:
        core.apply_consent({**event, "status": "WITHDRAWN", "recorded_at": later})
    out += core.flush()
    needs_consent = {n for n, p in policy.purposes.items() if p.consent == "required"}
    assert not [k for k in core.released if k[0] in needs_consent]
    releases = [(o.topic, o.key.decode(), o.value is not None) for o in out if o.topic.startswith("caselink.cases.")]
    audit = [serde.decode(o.value)[1] for o in out if o.topic == DISCLOSURES_TOPIC]
    assert releases == [(a["recipient_topic"], a["recipient_key"], a["action"] == "RELEASE") for a in audit]
