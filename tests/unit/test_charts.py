"""Charts and the review page render what they are given, safely."""

import re

from caselink.streams.charts import decision_html, histogram_svg, waterfall_svg
from caselink.streams.review_page import render_review_page, threshold_weight
from typer.testing import CliRunner

from caselink.cli import app


def test_waterfall_has_a_bar_per_field_and_a_total_that_adds_up() -> None:
    svg = waterfall_svg([("prior", "prior", -16.7), ("given_name", "exact", 7.0), ("location", "else", -4.0)],
                        link_at=3.17, review_at=0.0)
    assert re.findall(r'data-field="([^"]+)"', svg) == ["prior", "given_name", "location", "match weight"]
    assert "-13.70" in svg and "link 3.2" in svg and "review 0.0" in svg


def test_histogram_counts_every_series() -> None:
    svg = histogram_svg({"same person": [10, 20, 30], "different": [-30, -20]}, marks={"link": 3.17})
    assert "same person (3)" in svg and "different (2)" in svg and "link 3.2" in svg
    assert histogram_svg({"empty": []}) == "<p>no data</p>"


def test_review_page_escapes_what_sources_send() -> None:
    item = {"left": "health:<b>1", "right": "police:2", "match_weight": 1.8, "match_probability": 0.78,
            "explanation": [{"field": "prior", "level": "prior", "weight": -16.6},
                            {"field": "given_name", "level": "exact", "weight": 18.4}],
            "left_person": {"given_names": "<script>alert(1)</script>", "family_name": "Smith"},
            "right_person": {"given_names": "Jim", "family_name": "Smith"}}
    page = render_review_page([item], 1, threshold_weight(0.9), threshold_weight(0.5))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
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


def test_chart_model_command_writes_html(tmp_path) -> None:
    out = tmp_path / "weights.html"
    result = CliRunner().invoke(app, ["chart", "model", "--out", str(out), "--records", "1500", "--json"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "same person" in text and "different people" in text and "<svg" in text
