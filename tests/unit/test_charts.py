"""Charts and the review page render what they are given, safely, with numbers on their axes."""

import re

from caselink.linkage.deployment import load_model
from caselink.streams.charts import decision_html, waterfall_svg
from caselink.streams.data_charts import cluster_svg, completeness, completeness_svg
from caselink.streams.model_charts import best_weights, mu_svg, threshold_marks, weights_histogram_svg
from caselink.streams.review_page import render_review_page, threshold_weight
from typer.testing import CliRunner

from caselink.cli import app
from caselink.core.settings import LinkageSettings


def test_waterfall_has_a_bar_per_field_and_a_total_that_adds_up() -> None:
    svg = waterfall_svg([("prior", "prior", -16.7), ("given_name", "exact", 7.0), ("location", "else", -4.0)],
                        link_at=3.17, review_at=0.0)
    assert re.findall(r'data-field="([^"]+)"', svg) == ["prior", "given_name", "location", "match weight"]
    assert "-13.70" in svg and "link (+3.2)" in svg and "review (+0.0)" in svg


def test_histogram_counts_every_series_and_has_a_numbered_y_axis() -> None:
    svg = weights_histogram_svg({"same person": [10, 20, 30, 30.2], "different": [-30, -20]},
                                marks={"links from p 0.9": 3.17})
    assert "same person (4)" in svg and "different (2)" in svg and "links from p 0.9 (+3.2)" in svg
    y_labels = re.findall(r'text-anchor="end" fill="#9e9e9e">([\d,]+)</text>', svg)
    assert y_labels[0] == "0" and int(y_labels[-1].replace(",", "")) >= 2  # counts, from 0 to the tallest bin
    assert sum(int(n) for n in re.findall(r"<title>(\d+) ", svg)) == 6
    assert "No pairs to draw yet" in weights_histogram_svg({"empty": []})


def test_mu_chart_has_a_row_per_level_of_the_model_in_use() -> None:
    model = load_model(LinkageSettings(bundled_model=True))
    svg = mu_svg(model)
    levels = ["starting point:before any evidence",
              *(f"{c.name}:{lv}" for c in model.comparisons for lv in c.levels if lv != "missing")]
    assert re.findall(r'data-level="([^"]+)"', svg) == levels
    assert "m (matches) · u (others)" in svg and "log2(m / u)" in svg
    assert set(threshold_marks(model).values()) == {model.link_weight, model.review_weight}


def test_cluster_and_completeness_draw_what_they_are_given() -> None:
    nodes = [{"key": f"health:H{i}", "agency": "health", "label": f"Ann Lee, born 1990-0{i + 1}-01"} for i in range(3)]
    edges = [{"a": "health:H0", "b": "health:H1", "weight": 21.5, "kind": "link"},
             {"a": "health:H1", "b": "health:H2", "weight": 99.0, "kind": "same"}]
    svg = cluster_svg(nodes, edges, 3.17, 0.0)
    assert len(re.findall(r'class="record"', svg)) == 3 and "+21.5" in svg and "a person: same" in svg
    shares, counts = completeness([("health", {"given_names": "Ann", "phones": ["1"]}), ("health", {"sex": "F"}),
                                   ("police", {"given_names": "Bo", "identifiers": {"nhs_number": "9434765919"}})])
    assert counts == {"health": 2, "police": 1}
    assert shares["health"]["given name"] == 0.5 and shares["police"]["NHS number"] == 1.0
    grid = completeness_svg(shares, counts)
    assert len(re.findall(r'class="cell"', grid)) == 2 * 10
    assert "health (2 records)" in grid and "police (1 record)" in grid


def test_best_weights_split_decisions_by_outcome() -> None:
    decision = lambda outcome, *w: {"outcome": outcome, "candidates": [{"match_weight": x} for x in w]}  # noqa: E731
    series = best_weights([decision("LINKED", 20.0, -3.0), decision("NEW_CITIZEN", 1.5), decision("NEW_CITIZEN")])
    assert series == {"linked": [20.0], "not linked": [1.5]}


def test_review_page_escapes_what_sources_send() -> None:
    record = lambda key, person: {"key": key, "agency": key.split(":")[0], "record_id": key.split(":")[1],  # noqa: E731
                                  "person": person, "cases": [], "citizen_id": None, "citizen_records": [],
                                  "citizen_more": 0}
    item = {"left": "health:<b>1", "right": "police:2", "pair_key": "health:<b>1|police:2", "match_weight": 1.8,
            "match_probability": 0.78, "chance": "78 in 100", "strength": "medium", "agencies": ["health", "police"],
            "explanation": [{"field": "prior", "level": "prior", "weight": -16.6},
                            {"field": "given_name", "level": "exact", "weight": 18.4}],
            "records": [record("health:<b>1", {"given_names": "<script>alert(1)</script>", "family_name": "Smith"}),
                        record("police:2", {"given_names": "Jim", "family_name": "Smith"})],
            "findings": [{"topic": "first name", "status": "differ", "text": "Different first names: <i>."}],
            "why": ["<b>because</b>"], "notes": [{"by": "<x>", "action": "not_sure", "note": "<y>", "at": "2026"}]}
    page = render_review_page([item], 1, threshold_weight(0.9), threshold_weight(0.5))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "<b>because</b>" not in page and "<i>." not in page and "<x>" not in page
    assert 'data-left="health:&lt;b&gt;1"' in page and "Same person" in page
    assert "Nothing to review" in render_review_page([], 0, 3.17, 0.0)


def test_decision_chart_explains_the_strongest_candidate() -> None:
    decision = {"record_key": "police:P1", "outcome": "LINKED", "model_version": "m1", "candidates": [
        {"record_key": "health:H1", "match_weight": 20.5, "match_probability": 0.99999,
         "field_weights": [{"field": "prior", "level": "prior", "weight": -16.5},
                           {"field": "date_of_birth", "level": "exact", "weight": 37.0}]},
        {"record_key": "health:H2", "match_weight": -3.0, "match_probability": 0.1, "field_weights": []}]}
    html = decision_html(decision, 3.17, 0.0)
    assert "police:P1 vs health:H1: LINKED" in html and "+20.50" in html


def test_chart_model_command_writes_the_model_in_use(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CASELINK_LINKAGE__BUNDLED_MODEL", "true")
    from caselink.core.settings import get_settings

    get_settings.cache_clear()
    try:
        for name in ("model.html", "model.svg"):
            out = tmp_path / name
            result = CliRunner().invoke(app, ["chart", "model", "--out", str(out), "--json"])
            assert result.exit_code == 0, result.output
            assert 'class="mu-chart"' in out.read_text()
        assert out.read_text().startswith("<svg")
        result = CliRunner().invoke(app, ["chart", "model", "--out", str(tmp_path / "model.png")])
        assert result.exit_code == 1 and "an .html or .svg file" in result.output
    finally:
        get_settings.cache_clear()
