"""The gate against an independent reference (tests/consent_oracle.py, written from the docs).

Hypothesis generates a policy, citizens with merge histories, and consents of every kind (citizen,
record and identifier subjects, retired and unknown ids, identifiers spelt with spaces, hyphens and
lower case, opt-outs, field-scoped and agency-scoped refusals and permits, periods that ended, have
not started or are the wrong way round, withdrawals, replacements with tied and out-of-order
``recorded_at``, malformed ones). They reach the gate interleaved in a generated order, with
flushes at generated points (linked cases of different citizens in any order, as partitions
replay); what the purpose topics finally hold must equal the reference's
views, exactly (bases included). Then the clock moves on past some consents' periods and the two
are compared again.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from caselink.infra.topics import DISCLOSURES_TOPIC
from caselink.schemas import default_serde
from caselink.streams.consent.gate_core import GateCore
from caselink.streams.consent.policy import Policy
from caselink.streams.consent.pseudonym import Pseudonymiser
from caselink.streams.consent.register import ConsentRejected
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.consent_fixtures import T0, encode_case
from tests.consent_oracle import reference_views
from tests.depth import examples

serde = default_serde()
KEY, KEY_ID = b"oracle-key-0123456789abcdef", "ko"
NOW = T0 + timedelta(days=10)
LATER = NOW + timedelta(days=5)
AGENCIES = ["health", "social_care", "police", "education"]
DIRECT = ["given_names", "family_name", "other_names", "date_of_birth", "identifiers", "identifiers.nhs_number",
          "identifiers.health_id", "address", "postcode", "phones", "emails"]
QUASI = ["year_of_birth", "sex", "postcode_district", "cases"]
# Fields named in consents more often than the rest: those that cover, or are covered by, others.
SCOPED = ["identifiers", "identifiers.nhs_number", "date_of_birth", "year_of_birth", "address", "postcode",
          "postcode_district"] * 4
NHS = ["9434765919", "4010232137"]
POSTCODES = ["LS6 2AB", "ls62ab", "SW1A 1AA", "M1 1AE", "B33 8TH", "75008", "", None]
BASES = ["Art 6(1)(e)", "Art 6(1)(a); explicit consent", "Art 6(1)(a); Explicit Consent ",
         "Children Act 1989 s.47; Children Act 1989 s.47", "s.251 NHS Act 2006; statutory basis"]


@st.composite
def purpose(draw: Any) -> dict[str, Any]:
    pseudo = draw(st.booleans())
    mode = draw(st.sampled_from(["required", "not_required"]))
    return {"legal_basis": draw(st.sampled_from(BASES)), "consent": mode, "national_opt_out": draw(st.booleans()),
            "statutory_override": mode == "not_required" and draw(st.booleans()),
            "agencies": draw(st.one_of(st.just(["*"]), st.lists(st.sampled_from(AGENCIES), min_size=1, max_size=3,
                                                                 unique=True))),
            "fields": draw(st.lists(st.sampled_from(QUASI if pseudo else DIRECT + QUASI), min_size=1 if pseudo else 3,
                                    max_size=8, unique=True)),
            "min_match_weight": draw(st.sampled_from([0.0, 5.0, 15.0])),
            "max_sensitivity": draw(st.sampled_from(["normal", "restricted", "sealed"])), "pseudonymise": pseudo}


policies = st.lists(purpose(), min_size=1, max_size=4).map(
    lambda ps: {"version": "oracle", "purposes": {f"p{i}": p for i, p in enumerate(ps)}})


@st.composite
def member(draw: Any, agency: str, rid: str) -> dict[str, Any]:
    nhs = draw(st.sampled_from([*NHS, None]))
    identifiers = {f"{agency}_id": rid, **({"nhs_number": nhs} if nhs else {})}
    addresses = [{"lines": draw(st.lists(st.sampled_from(["12 Hyde Park Road", "Flat 2", ""]), max_size=2)),
                  "locality": draw(st.sampled_from(["Leeds", None])), "region": None,
                  "postcode": draw(st.sampled_from(POSTCODES)), "country": draw(st.sampled_from(["GB", None])),
                  "valid_from": None, "valid_to": None} for _ in range(draw(st.integers(0, 2)))]
    person = {"given_names": draw(st.sampled_from(["Amelia", "Zofia", None])), "family_name": "Okafor",
              "other_names": draw(st.sampled_from([[], ["Smith"], ["Smith", "Jones"]])),
              "date_of_birth": draw(st.sampled_from(["1984-03-09", "2014-11-30", None])),
              "sex": draw(st.sampled_from(["F", "M", None])), "identifiers": identifiers, "addresses": addresses,
              "phones": draw(st.sampled_from([[], ["07700 900123"]])), "emails": []}
    cases = [{"case_id": f"{rid}-c{i}", "case_type": "referral", "status": "open", "opened_at": None,
              "closed_at": None, "sensitivity": draw(st.sampled_from(["normal", "restricted", "sealed", "secret"]))}
             for i in range(draw(st.integers(0, 2)))]
    return {"agency": agency, "source_record_id": rid, "source_version": 1,
            "match_weight": draw(st.sampled_from([2.0, 10.0, 30.0])), "linked_at": T0, "person": person,
            "cases": cases}


def case(cid: str, members: list[dict[str, Any]], merged_from: list[str]) -> dict[str, Any]:
    return {"citizen_id": cid, "version": 1, "members": members, "merged_from": merged_from,
            "model_version": "oracle", "updated_at": T0}


@st.composite
def world(draw: Any) -> tuple[dict[str, dict[str, Any]], dict[str, str], list[tuple[str, dict[str, Any] | None]]]:
    """Live citizens, retired id -> survivor, and the linked-case history that led there."""
    live: dict[str, list[dict[str, Any]]] = {}
    n = 0
    for c in range(draw(st.integers(1, 4))):
        members = []
        for _ in range(draw(st.integers(1, 3))):
            n += 1
            members.append(draw(member(draw(st.sampled_from(AGENCIES)), f"R{n}")))
        live[f"C{c}"] = members
    survivor_of: dict[str, str] = {}
    for r in range(draw(st.integers(0, 3))):  # each retired id merged into a live one or an earlier retired one
        chain = survivor_of and draw(st.booleans())  # merges of merges, often
        survivor_of[f"X{r}"] = f"X{r - 1}" if chain else draw(st.sampled_from([*live, *survivor_of]))
    into: dict[str, list[str]] = {}
    for retired, survivor in survivor_of.items():
        into.setdefault(survivor, []).append(retired)
    history: list[tuple[str, dict[str, Any] | None]] = []
    for retired in sorted(survivor_of, reverse=True):  # deepest first: a retired id's own merges come first
        history.append((retired, case(retired, [draw(member("housing", f"old-{retired}"))], into.get(retired, []))))
        history.append((retired, None))
    cases = {cid: case(cid, members, into.get(cid, [])) for cid, members in live.items()}
    history += list(cases.items())
    return cases, survivor_of, history


@st.composite
def consent_events(draw: Any, policy: dict[str, Any], cases: dict[str, dict[str, Any]],
                   retired: list[str]) -> list[dict[str, Any]]:
    records = [(m["agency"], m["source_record_id"]) for c in cases.values() for m in c["members"]]
    events = []
    for i in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["CITIZEN", "RECORD", "IDENTIFIER"]))
        subject: dict[str, Any] = {"kind": kind, "citizen_id": None, "agency": None, "source_record_id": None,
                                   "scheme": None, "value": None}
        if kind == "CITIZEN":
            subject["citizen_id"] = draw(st.sampled_from(retired) if retired and draw(st.booleans())
                                         else st.sampled_from([*cases, "C-unknown"]))
        elif kind == "RECORD":
            subject["agency"], subject["source_record_id"] = draw(st.sampled_from([*records, ("health", "nope")]))
        else:
            scheme, value = draw(st.sampled_from([("nhs_number", v) for v in NHS] + [
                (f"{a}_id", r) for a, r in records]))
            spelt = draw(st.sampled_from([value, f"{value[:3]} {value[3:6]} {value[6:]}", f"{value[:3]}-{value[3:]}",
                                          value.lower()]))
            subject.update(scheme=scheme, value=spelt)
        opt_out = draw(st.booleans()) and draw(st.booleans())
        valid_from, valid_to = (None, None) if draw(st.booleans()) else draw(st.sampled_from([
            (None, None), (NOW - timedelta(days=1), NOW + timedelta(days=20)),  # open; current
            (None, NOW - timedelta(hours=1)), (NOW + timedelta(days=1), None),  # ended; not started
            (None, NOW), (NOW, None), (None, LATER), (LATER, None),  # the bounds exactly at the two times
            (NOW - timedelta(days=1), NOW + timedelta(days=2)),  # ends between the two times
            (NOW + timedelta(days=1), NOW - timedelta(days=1)),  # the wrong way round: malformed
        ]))
        events.append({
            "event_id": f"e{i}", "consent_id": draw(st.sampled_from(["k1", "k2", "k3", "k4", "k5", "k6"])),
            "status": draw(st.sampled_from(["ACTIVE", "ACTIVE", "ACTIVE", "WITHDRAWN"])), "subject": subject,
            "purpose": "*" if draw(st.booleans()) else draw(st.sampled_from([*policy["purposes"], "marketing"])),
            "decision": "DENY" if opt_out and draw(st.booleans()) else draw(st.sampled_from(["PERMIT", "DENY"])),
            "national_opt_out": opt_out, "basis": None,
            "agencies": draw(st.lists(st.sampled_from(AGENCIES), max_size=2, unique=True)),
            "fields": [] if draw(st.booleans()) else draw(st.lists(st.sampled_from([*DIRECT, *QUASI, *SCOPED]),
                                                                   min_size=1, max_size=2, unique=True)),
            "valid_from": valid_from, "valid_to": valid_to, "recorded_by": "oracle",
            "recorded_at": T0 + timedelta(hours=draw(st.integers(0, 4))),
        })
    return events


def topics_after(outputs: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the purpose topics hold after these outputs: the latest value per key, tombstones removing."""
    held: dict[tuple[str, str], dict[str, Any]] = {}
    for o in outputs:
        if not o.topic.startswith("caselink.cases."):
            continue
        purpose = o.topic.removeprefix("caselink.cases.")
        if o.value is None:
            held.pop((purpose, o.key.decode()), None)
        else:
            view = serde.decode(o.value)[1]
            assert view["purpose"] == purpose
            held[(purpose, o.key.decode())] = {k: v for k, v in view.items()
                                               if k not in ("policy_version", "released_at")}
    return held


@settings(max_examples=examples(400), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_gate_releases_exactly_what_the_reference_evaluator_says(data: Any) -> None:
    policy = data.draw(policies)
    cases, survivor_of, history = data.draw(world())
    events = data.draw(consent_events(policy, cases, list(survivor_of)))
    key = data.draw(st.sampled_from([KEY, KEY, None]))
    now = [NOW]
    core = GateCore(Policy.model_validate(policy), Pseudonymiser(key, KEY_ID) if key else None, clock=lambda: now[0])

    # Linked cases live in several partitions, read back in no particular order relative to each
    # other: only each citizen's own messages keep their order. Then interleave that with the
    # consents (which keep theirs), with flushes at drawn points.
    by_citizen: dict[str, list[tuple[str, Any]]] = {}
    for item in history:
        by_citizen.setdefault(item[0], []).append(item)
    linked = []
    while by_citizen:
        cid = data.draw(st.sampled_from(sorted(by_citizen)))
        linked.append(by_citizen[cid].pop(0))
        if not by_citizen[cid]:
            del by_citizen[cid]
    steps: list[tuple[str, Any]] = []
    consents = list(events)
    while linked or consents:
        take_case = linked and (not consents or data.draw(st.booleans()))
        steps.append(("case", linked.pop(0)) if take_case else ("consent", consents.pop(0)))
        if data.draw(st.integers(0, 3)) == 0:
            steps.append(("flush", None))
    outputs: list[Any] = []
    for what, item in steps:
        if what == "case":
            cid, value = item
            core.apply_linked_case(cid, encode_case(value) if value is not None else None)
        elif what == "consent":
            try:
                core.apply_consent(item)
            except ConsentRejected:
                pass  # malformed: the reference ignores it too
        else:
            outputs += core.flush()
    outputs += core.flush()
    assert topics_after(outputs) == reference_views(policy, cases, survivor_of, events, NOW, key, KEY_ID)

    # Time passes: consents whose period ends or starts in between change what flows.
    now[0] = LATER
    core.tick(NOW, LATER)
    outputs += core.flush()
    assert topics_after(outputs) == reference_views(policy, cases, survivor_of, events, LATER, key, KEY_ID)

    # Each release's Disclosure names exactly the refusals its basis says were overridden.
    for o in outputs:
        if o.topic == DISCLOSURES_TOPIC:
            d = serde.decode(o.value)[1]
            if d["action"] == "RELEASE":
                clause = d["basis"].partition("overrides recorded refusals: ")[2]
                assert re.findall(r"(\S+) \((?:objection|national opt-out)", clause) == d["overrides"]


@st.composite
def field_consents(draw: Any, cases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Consents in force, about the citizen or one of its records, each naming one or two fields."""
    records = [(m["agency"], m["source_record_id"]) for c in cases.values() for m in c["members"]]
    events = []
    for i in range(draw(st.integers(1, 4))):
        subject: dict[str, Any] = {"kind": "CITIZEN", "citizen_id": "C0", "agency": None, "source_record_id": None,
                                   "scheme": None, "value": None}
        if draw(st.booleans()):
            agency, rid = draw(st.sampled_from(records))
            subject.update(kind="RECORD", citizen_id=None, agency=agency, source_record_id=rid)
        events.append({"event_id": f"f{i}", "consent_id": f"f{i}", "status": "ACTIVE", "subject": subject,
                       "purpose": "*", "decision": draw(st.sampled_from(["PERMIT", "DENY"])),
                       "national_opt_out": False, "basis": None, "agencies": [],
                       "fields": draw(st.lists(st.sampled_from([*SCOPED, *DIRECT, *QUASI]), min_size=1, max_size=2,
                                               unique=True)),
                       "valid_from": None, "valid_to": None, "recorded_by": "oracle", "recorded_at": T0})
    return events


@settings(max_examples=examples(1000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_field_scoped_consents_release_what_the_reference_says(data: Any) -> None:
    """The same comparison, concentrated on consents naming fields (and the fields derived from them):
    one purpose, so that a consent's fields meet that purpose's fields often."""
    policy = {"version": "fields", "purposes": {"p0": data.draw(purpose())}}
    cases, survivor_of, history = data.draw(world())
    events = data.draw(field_consents(cases))
    core = GateCore(Policy.model_validate(policy), Pseudonymiser(KEY, KEY_ID), clock=lambda: NOW)
    for cid, value in history:
        core.apply_linked_case(cid, encode_case(value) if value is not None else None)
    for event in events:
        core.apply_consent(event)
    assert topics_after(core.flush()) == reference_views(policy, cases, survivor_of, events, NOW, KEY, KEY_ID)
