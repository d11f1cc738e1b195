"""The review screen without a browser: what agrees and conflicts, the view of each pair, undo and
"not sure" in the linker, and the page's plain language."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from caselink.linkage.deployment import load_model
from caselink.linkage.schemes import nhs_modulus_11
from caselink.schemas import default_serde
from caselink.streams.charts import waterfall_svg
from caselink.streams.linker_core import LinkerCore
from caselink.streams.review_compare import compare, years_between
from caselink.streams.review_page import render_review_page, threshold_weight
from caselink.streams.review_view import open_pairs, plain_field, plain_level

from caselink.core.settings import LinkageSettings

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NHS = [n for n in (f"94{i:08d}" for i in range(1000, 2000)) if nhs_modulus_11(n)][:4]
HOME = [{"lines": ["14 Moor Lane"], "locality": "Leeds", "postcode": "LS6 3QT"}]
GRANDFATHER = {"given_names": "George", "family_name": "Richardson", "date_of_birth": "1942-03-02", "sex": "M",
               "identifiers": {"nhs_number": NHS[0]}, "addresses": HOME}
GRANDSON = {"given_names": "GEORGE", "family_name": "RICHARDSON", "date_of_birth": "2016-07-19", "sex": "M",
            "addresses": [{"lines": ["14 Moor Ln"], "postcode": "LS63QT"}]}
serde = default_serde()


def texts(findings, status):
    return [f.text for f in findings if f.status == status]


def test_an_age_gap_and_two_identifiers_come_first_and_case_does_not_make_names_differ() -> None:
    findings = compare(GRANDFATHER, {**GRANDSON, "identifiers": {"nhs_number": NHS[1]}})
    assert [f.status for f in findings[:2]] == ["conflict", "conflict"]
    assert findings[0].text.startswith("Born 74 years apart: 2 March 1942 and 19 July 2016.")
    assert findings[1].text.startswith(f"Two different NHS numbers: {NHS[0]} and {NHS[1]}.")
    assert "Same first name: George / GEORGE, written differently." in texts(findings, "agree")
    assert "Same family name: Richardson / RICHARDSON, written differently." in texts(findings, "agree")
    assert any(t.startswith("Same address: 14 Moor Lane, Leeds, LS6 3QT (written differently)")
               for t in texts(findings, "agree"))


def test_near_misses_are_called_similar_not_different() -> None:
    findings = compare({"given_names": "Jim", "family_name": "Smith", "date_of_birth": "1980-05-12"},
                       {"given_names": "James", "family_name": "Smith", "date_of_birth": "1980-12-05"})
    assert texts(findings, "similar") == ["Dates of birth 12 May 1980 and 5 December 1980: day and month swapped, "
                                          "a common slip.", "Jim and James: one is a short form of the other."]
    one_digit = compare({"date_of_birth": "1980-05-12"}, {"date_of_birth": "1980-05-13"})
    assert one_digit[0].status == "similar" and "one digit apart" in one_digit[0].text
    assert years_between(datetime(1942, 3, 2).date(), datetime(2016, 3, 1).date()) == 73


def test_only_one_side_and_differences_are_said_plainly() -> None:
    findings = compare({"given_names": "Ann", "addresses": HOME, "identifiers": {"nhs_number": NHS[0]}},
                       {"given_names": "Ann", "sex": "F"})
    assert texts(findings, "one_sided") == [f"Only one record has an NHS number: {NHS[0]}.",
                                           "Only one record has an address: 14 Moor Lane, Leeds, LS6 3QT."]
    moved = compare({"addresses": HOME}, {"addresses": [{"lines": ["2 Mill St"], "postcode": "BD1 4AB"}]})
    assert moved[0].status == "differ" and "People move" in moved[0].text


def core_with(*people: tuple[str, dict]) -> LinkerCore:
    core = LinkerCore(load_model(LinkageSettings(bundled_model=True)))
    for key, person in people:
        agency, rid = key.split(":")
        event = {"event_id": key, "agency": agency, "source_record_id": rid, "source_version": 1, "op": "UPSERT",
                 "occurred_at": T0, "emitted_at": T0, "person": person,
                 "cases": [{"case_id": f"{rid}-1", "case_type": "school place", "status": "open",
                            "opened_at": "2026-09-01", "closed_at": None, "sensitivity": "normal"}],
                 "source": {}}
        core.apply(serde.encode("PersonEvent", event))
    return core


def review(core: LinkerCore, left: str, right: str, action: str | None, same: bool = False,
           note: str | None = None) -> list:
    return core.apply(serde.encode("ReviewDecision", {
        "decision_id": f"{action}-{left}", "left_record": left, "right_record": right, "same_person": same,
        "decided_by": "A. Reviewer", "reason": note, "decided_at": T0, "action": action}))


def test_the_view_of_a_pair_holds_both_records_their_citizens_and_why_a_person_is_asked() -> None:
    core = core_with(("health:H1", GRANDFATHER), ("health:H2", {**GRANDFATHER, "phones": ["07700 900123"]}),
                     ("education:E1", GRANDSON))
    items, total = open_pairs(core)
    assert total == len(items) >= 1
    item = next(i for i in items if "education:E1" in (i["left"], i["right"]))
    grandfather = next(r for r in item["records"] if r["key"].startswith("health"))
    assert [o["key"] for o in grandfather["citizen_records"]] == [
        "health:H2" if grandfather["key"] == "health:H1" else "health:H1"]
    assert grandfather["citizen_records"][0]["case_types"] == ["school place"]
    assert grandfather["cases"][0]["case_type"] == "school place"
    assert item["findings"][0]["status"] == "conflict" and "74 years apart" in item["findings"][0]["text"]
    assert item["why"][0].startswith("They share a family name and an address")
    assert item["chance"] == f"{int(item['match_probability'] * 100)} in 100"


def test_not_sure_keeps_the_pair_open_with_its_note_and_undo_reopens_a_decided_pair() -> None:
    core = core_with(("health:H1", GRANDFATHER), ("education:E1", GRANDSON))
    pair = ("education:E1", "health:H1")
    assert pair in core.index.review
    assert review(core, *pair, "not_sure", note="ask the school for the date of birth") == []
    assert pair in core.index.review
    assert [n["note"] for n in core.review_notes["education:E1|health:H1"]] == ["ask the school for the date of birth"]

    out = review(core, *pair, None, same=True, note="same person: the school record is wrong")
    assert pair not in core.index.review
    assert core.index.citizen_of(pair[0]) == core.index.citizen_of(pair[1])
    assert any(o.topic == "caselink.linked-cases" for o in out)

    out = review(core, *pair, "undo", note="pressed the wrong key")
    assert pair in core.index.review  # open again, at its own score
    assert core.index.citizen_of(pair[0]) != core.index.citizen_of(pair[1])
    assert any(o.topic == "caselink.review" for o in out)
    assert [n["action"] for n in core.review_notes["education:E1|health:H1"]] == ["not_sure", "decide", "undo"]
    review(core, *pair, "undo")  # nothing left to undo: refused
    assert core.last_outcome == "REJECTED" and pair in core.index.review


def test_the_page_speaks_plainly_and_keeps_the_numbers_one_click_away() -> None:
    core = core_with(("health:H1", GRANDFATHER), ("education:E1", GRANDSON))
    items, total = open_pairs(core)
    page = render_review_page(items, total, threshold_weight(0.9), threshold_weight(0.5), "A. Reviewer", True)
    visible = re.sub(r"<details>.*?</details>", "", page, flags=re.S)
    visible = re.sub(r"<(script|style)>.*?</\1>", "", visible, flags=re.S)
    for jargon in ("match weight", "prior", "term frequency", "else", "log2", "m/u"):
        assert jargon not in visible.lower(), jargon
    assert "Watch out:" in page and "Born 74 years apart" in page
    assert "that these two records are the same person" in page
    assert 'id=open-count>1<' in page and "Signed in as <b id=reviewer>A. Reviewer</b>" in page
    assert "Already joined to" in page or "Not joined to any other record yet." in page
    assert "<details><summary>How the computer scored it (the numbers)</summary>" in page
    assert 'data-agencies="education health"' in page and 'data-strength="strong"' in page


def test_plain_words_for_the_models_parts() -> None:
    assert plain_field("prior") == "starting point" and plain_field("identifier:nhs_number") == "NHS number"
    assert plain_level("exact (term frequency adjusted)") == "same, counted by how common the value is"
    assert plain_level("else") == "different"


@pytest.mark.parametrize("labels", [("prior", "prior"), ("location", "same_address (term frequency adjusted)")])
def test_waterfall_text_never_lies_on_a_bar(labels) -> None:
    svg = waterfall_svg([(*labels, -16.3), ("given_name", "exact", 6.8), ("date_of_birth", "else", -7.7)],
                        link_at=3.17, review_at=0.0)
    bars = [(float(x), float(x) + float(w)) for x, w in re.findall(r'class="bar"[^>]*x="([\d.]+)"[^>]*width="([\d.]+)"',
                                                                    svg)]
    label_end = max(len(f"{a} {b}") for a, b in [labels, ("given_name", "exact"), ("date_of_birth", "else")]) * 6.6
    assert min(start for start, _ in bars) >= label_end  # the names' column ends before any bar
    width = float(re.search(r'width="(\d+)"', svg).group(1))
    assert max(end for _, end in bars) <= width - 50  # the values' column starts after every bar
    marks = re.findall(r'class="mark" x="[\d.]+" y="(\d+)"', svg)
    assert len(set(marks)) == 2  # the two thresholds' names on lines of their own


def test_one_card_per_two_people_and_different_keeps_every_pair_between_them_apart() -> None:
    from caselink.streams.review_view import pairs_between

    core = core_with(("health:H1", GRANDFATHER), ("health:H2", {**GRANDFATHER, "phones": ["07700 900123"]}),
                     ("education:E1", GRANDSON))
    assert len(core.index.review) == 2  # the grandson against each of his grandfather's two records
    items, total = open_pairs(core)
    assert total == 1 and len(items) == 1
    assert [(a["left"], a["right"]) for a in items[0]["also"]] == [("education:E1", "health:H2")]
    pairs = pairs_between(core, items[0]["left"], items[0]["right"], "decide", False)
    assert pairs == [("education:E1", "health:H1"), ("education:E1", "health:H2")]
    for left, right in pairs:
        review(core, left, right, None, same=False, note="grandson")
    assert open_pairs(core) == ([], 0)
    assert pairs_between(core, "education:E1", "health:H1", "undo", None) == pairs  # undo takes both back
    assert pairs_between(core, "education:E1", "health:H1", "not_sure", None) == [("education:E1", "health:H1")]
