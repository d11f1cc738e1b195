"""LinkedCase bytes assembled from cached member encodings equal a plain encoding of the case."""

from caselink.infra.topics import LINKED_CASES_TOPIC
from caselink.schemas import default_serde
from caselink.streams.case_codec import LinkedCaseCodec
from caselink.streams.linker_core import LinkerCore

from tests.events import encoded_person_event
from tests.linkage_fixtures import person, synthetic_data, trained_model
from tests.unit.test_linker_core import T0, event


def _case_events() -> list[bytes]:
    """Inserts that link and merge, updates that move records, deletes that split, with cases."""
    _, _, people = synthetic_data()
    items = list(people.items())[:600]
    out = []
    for i, (key, p) in enumerate(items):
        agency, rid = key.split(":")
        raw = event(agency, rid, 1, p)
        if i % 7 == 0:  # some records carry case references
            serde = default_serde()
            _, record = serde.decode(raw)
            record["cases"] = [{"case_id": f"K{i}", "case_type": "referral", "status": None, "opened_at": "2026-01-02",
                                "closed_at": None, "sensitivity": "STANDARD"}]
            raw = serde.encode("PersonEvent", record)
        out.append(raw)
    for key, p in items[:600:9]:  # updates: a changed address, then the same values again
        agency, rid = key.split(":")
        moved = {**p, "addresses": [{"lines": ["1 New Street"], "postcode": "ZZ9 9ZZ", "locality": "nowhere"}]}
        out += [event(agency, rid, 2, moved), event(agency, rid, 3, moved)]
    for key, _p in items[:600:11]:
        agency, rid = key.split(":")
        out.append(event(agency, rid, 5, None, op="DELETE"))
    return out


def _reference_view(core: LinkerCore, cid: str, at: object, latest: dict, first_linked: dict) -> dict:
    """The LinkedCase as the linker defines it, built from the input events, not from the codec."""
    members = []
    for key in core.index.members(cid):
        ev = latest[key]
        edges = core.index.edges.get(key)
        weight = max(edges.values()) if edges else 0.0
        weight = 99.0 if weight == float("inf") else weight  # a reviewer's must-link
        members.append({"agency": ev["agency"], "source_record_id": ev["source_record_id"],
                        "source_version": ev["source_version"], "match_weight": weight,
                        "linked_at": first_linked[key], "person": ev["person"], "cases": ev["cases"]})
    return {"citizen_id": cid, "version": core.citizen_versions[cid], "members": members,
            "merged_from": list(core.index.citizens[cid].merged_from), "model_version": core.model.version,
            "updated_at": at, "members_omitted": 0}


def test_assembled_linked_cases_equal_the_plain_encoding() -> None:
    serde = default_serde()
    core = LinkerCore(trained_model())
    latest: dict[str, dict] = {}
    first_linked: dict[str, object] = {}
    checked = merged = 0
    for raw in _case_events():
        _, ev = serde.decode(raw)
        key = f"{ev['agency']}:{ev['source_record_id']}"
        outputs = core.apply(raw)
        if core.last_outcome not in ("IGNORED_STALE", "REJECTED"):
            if ev["op"] == "UPSERT":
                latest[key] = ev
                first_linked.setdefault(key, ev["emitted_at"])
            elif key not in core.index.records:
                latest.pop(key, None)
                first_linked.pop(key, None)
        for out in outputs:
            if out.topic != LINKED_CASES_TOPIC or out.value is None:
                continue
            cid = out.key.decode()
            expected = _reference_view(core, cid, ev["emitted_at"], latest, first_linked)
            assert out.value == serde.encode("LinkedCase", expected, check=True)
            assert core.linked_case(cid, ev["emitted_at"]) == expected  # the web API's view too
            checked += 1
            merged += len(expected["members"]) > 1
    assert checked > 600 and merged > 100  # many cases, many with several members


def test_linked_at_survives_updates_and_person_reads_back() -> None:
    _, _, people = synthetic_data()
    key, p = next(iter(people.items()))
    agency, rid = key.split(":")
    core = LinkerCore(trained_model())
    first, second = event(agency, rid, 1, p), event(agency, rid, 2, {**p, "family_name": "Changed"})
    core.apply(first)
    core.apply(second)
    cid = core.index.citizen_of(key)
    (member,) = core.linked_case(cid)["members"]
    serde = default_serde()
    # linked_at is the emitted_at of the first event applied, kept when the record is updated.
    assert member["linked_at"] == serde.decode(first)[1]["emitted_at"]
    assert member["linked_at"] != serde.decode(second)[1]["emitted_at"]
    assert member["source_version"] == 2
    assert core.person(key)["family_name"] == "Changed"
    core.apply(event(agency, rid, 3, None, op="DELETE"))
    assert core.person(key) == {} and key not in core.members


def test_every_part_of_a_linked_case_has_a_compiled_writer() -> None:
    """The parts are written by compiled writers (fastavro only for values they refuse), and a
    member's person and cases are copied from its PersonEvent's bytes, so the byte-for-byte test
    above checks those writers and that copy."""
    codec = LinkedCaseCodec(default_serde())
    parts = (codec._case_head, codec._case_tail, codec._member_head, codec._member_tail)
    assert all(part.compiled is not None for part in parts)
    assert codec._event_fields is not None


def test_a_citizen_too_large_for_one_message_lists_the_members_that_fit_and_counts_the_rest() -> None:
    core = LinkerCore(trained_model(), max_citizen_records=None, max_message_bytes=20_000)
    serde = default_serde()
    big = None
    for i in range(120):  # one person, many source records, each with a long case history
        p = person("Ann", "Lee", "1990-04-03", nhs="9434765919")
        raw = encoded_person_event("health", f"H{i}", p, event_id=f"e{i}", at=T0,
                                   cases=[{"case_id": f"C{i}-{j}", "case_type": "attendance " * 5} for j in range(3)])
        for out in core.apply(raw):
            if out.topic == LINKED_CASES_TOPIC and out.value is not None:
                big = out
    assert big is not None and len(big.value) <= 20_000
    view = serde.decode(big.value)[1]
    assert view["members_omitted"] > 0
    assert len(view["members"]) + view["members_omitted"] == 120
    assert [m["source_record_id"] for m in view["members"]] == [f"H{i}" for i in range(len(view["members"]))]
