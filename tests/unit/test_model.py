import json
from pathlib import Path

import pytest
from caselink.linkage.model import LinkageModel, ModelError
from caselink.linkage.record import standardise_person

from tests.linkage_fixtures import person, synthetic_data, trained_model


def test_trained_model_has_sensible_weights() -> None:
    model = trained_model()
    weights = {c.name: dict(zip(c.levels, c.weights(), strict=True)) for c in model.comparisons}
    assert weights["identifier:nhs_number"]["exact"] > 8
    assert weights["date_of_birth"]["exact"] > weights["date_of_birth"]["one_edit"] > weights["date_of_birth"]["else"]
    assert weights["given_name"]["exact"] > 0 > weights["given_name"]["else"]
    assert weights["location"]["same_address"] > weights["location"]["else"]
    assert 0 < model.prior < 0.01


def test_em_recovers_the_true_m_of_names_within_a_few_points() -> None:
    import numpy as np
    from caselink.linkage.evaluate import cluster_pairs
    from caselink.linkage.training import comparison_matrix

    records, truth, _ = synthetic_data()
    by_key = {r.key: r for r in records}
    true_pairs = list(cluster_pairs(truth))
    model = trained_model()
    comparisons = model._comparisons
    matrix = comparison_matrix([(by_key[a], by_key[b]) for a, b in true_pairs], comparisons)
    for j, params in enumerate(model.comparisons):
        if params.name not in ("given_name", "family_name"):
            continue
        col = matrix[:, j]
        col = col[col >= 0]
        true_m = np.bincount(col, minlength=len(params.levels)) / len(col)
        assert abs(true_m[0] - params.m[0]) < 0.05, params.name


def test_explanation_adds_up_to_the_score() -> None:
    model = trained_model()
    a = standardise_person("a", person("Elizabeth", "Hughes", "1990-04-03", nhs="9434765919"))
    b = standardise_person("b", person("Liz", "Hughes", "1990-03-04"))
    weight, _levels = model.score(a, b)
    parts = model.explain(a, b)
    assert sum(p.weight for p in parts) == pytest.approx(weight)
    by_field = {p.field: p for p in parts}
    assert by_field["given_name"].level == "nickname_or_swapped"
    assert by_field["date_of_birth"].level == "day_month_swapped"
    assert by_field["identifier:nhs_number"].level == "missing" and by_field["identifier:nhs_number"].weight == 0


def test_common_names_weigh_less_than_rare_ones() -> None:
    model = trained_model()
    common = model.explain(standardise_person("a", person("Olivia", "Smith", "1990-01-01")),
                           standardise_person("b", person("Olivia", "Smith", "1980-01-01")))
    rare = model.explain(standardise_person("a", person("Olivia", "Zzyzx", "1990-01-01")),
                         standardise_person("b", person("Olivia", "Zzyzx", "1980-01-01")))
    fam = {p.field: p.weight for p in common}["family_name"]
    assert {p.field: p.weight for p in rare}["family_name"] > fam + 2


def test_model_file_round_trip(tmp_path: Path) -> None:
    model = trained_model()
    path = tmp_path / "model.json"
    model.save(path)
    loaded = LinkageModel.load(path)
    assert loaded.to_json() == model.to_json()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.update(prior=1.5), "prior must be in"),
        (lambda d: d["comparisons"][0].update(m=[0.5, 0.5]), "has 2 values for 3 levels"),
        (lambda d: d["comparisons"][1]["u"].__setitem__(0, -0.1), "outside (0, 1]"),
        (lambda d: d["comparisons"][0].update(name="shoe_size"), "unknown comparison"),
        (lambda d: d.update(link_threshold=0.3, review_threshold=0.6), "thresholds"),
        (lambda d: d.update(format="something-else"), "format"),
        (lambda d: d.pop("comparisons"), "malformed model"),
    ],
)
def test_corrupt_model_fails_loudly(tmp_path: Path, corrupt, message: str) -> None:
    data = trained_model().to_json()
    data = json.loads(json.dumps(data))
    corrupt(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        LinkageModel.load(path)


def test_truncated_model_file_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(trained_model().to_json())[:200])
    with pytest.raises(ModelError, match="not valid JSON at line 1"):
        LinkageModel.load(path)


def test_early_exit_scoring_agrees_with_full_scoring() -> None:
    import random

    records, _, _ = synthetic_data()
    model = trained_model()
    rng = random.Random(1)
    pairs = [(rng.choice(records), rng.choice(records)) for _ in range(3000)]
    pairs += [(r, records[i + 1]) for i, r in enumerate(records[:-1])]  # neighbours: often the same person
    exits = 0
    for a, b in pairs:
        full = model.score(a, b)
        quick = model.score_at_least(a, b, model.review_weight)
        if quick is None:
            exits += 1
            assert full[0] < model.review_weight
        else:
            assert quick == full
    assert exits > len(pairs) / 2  # it does give up early on most non-matches


def test_a_model_of_the_old_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    data = json.loads(json.dumps(trained_model().to_json()))
    data["format"] = "caselink-linkage-model/1"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="caselink train"):
        LinkageModel.load(path)


def test_thresholds_are_the_deployments_choice() -> None:
    model = trained_model()
    stricter = model.with_thresholds(link=0.99, review=0.6)
    assert stricter.link_weight > model.link_weight and stricter.review_weight > model.review_weight
    assert stricter.score.__self__.comparisons == model.comparisons
    with pytest.raises(ModelError, match="thresholds"):
        model.with_thresholds(link=0.5, review=0.9)


def test_the_borrowed_identifier_level_is_held_at_no_evidence() -> None:
    model = trained_model()
    params = next(c for c in model.comparisons if c.name == "identifier:nhs_number")
    weights = dict(zip(params.levels, params.weights(), strict=True))
    assert weights["exact_other_person"] == pytest.approx(0.0)
    a = standardise_person("a", person("Ann", "Lee", "1990-04-03", nhs="9434765919"))
    b = standardise_person("b", person("Zoe", "Lee", "2012-11-20", nhs="9434765919"))  # a child on her mother's
    by_field = {p.field: p for p in model.explain(a, b)}
    assert by_field["identifier:nhs_number"].level == "exact_other_person"
    assert model.score(a, b)[0] < model.review_weight


def test_a_postal_code_on_most_records_weighs_next_to_nothing() -> None:
    from caselink.linkage.training import train_model

    records, _, _ = synthetic_data()
    # The same data, but four records in five carry one placeholder postal code.
    import copy

    placeholder = standardise_person("x", person("A", "B", "2000-01-01", postcode="00000")).postcode
    moved = []
    for i, r in enumerate(records):
        r2 = copy.copy(r)
        if i % 5:
            r2.postcode = placeholder
        moved.append(r2)
    model = train_model(moved, u_pairs=50_000)
    a = standardise_person("a", person("Ann", "Lee", "1990-04-03", postcode="00000", address="1 A Road"))
    b = standardise_person("b", person("Ann", "Lee", "1990-04-03", postcode="00000", address="9 Z Street"))
    location = {p.field: p for p in model.explain(a, b)}["location"]
    assert location.level.startswith("same_postcode") and location.weight < 1.0
    # while a rare postal code, shared, is strong evidence
    c = standardise_person("c", person("Ann", "Lee", "1990-04-03", postcode="LS6 2AB", address="1 A Road"))
    d = standardise_person("d", person("Ann", "Lee", "1990-04-03", postcode="LS6 2AB", address="9 Z Street"))
    assert {p.field: p for p in model.explain(c, d)}["location"].weight > location.weight + 5


def test_early_exit_scoring_agrees_with_full_scoring_without_identifiers() -> None:
    """A model of data with no identifier (FEBRL) skips no comparison it should not."""
    import random

    from caselink.linkage.training import train_model

    records, _, _ = synthetic_data()
    plain = []
    for r in records[:3000]:
        copy = standardise_person(r.key, {"given_names": r.given, "family_name": r.family,
                                          "date_of_birth": r.dob.digits if r.dob else None,
                                          "addresses": [{"lines": [r.address or ""], "postcode": r.postcode.code
                                                         if r.postcode else None, "locality": r.locality}]})
        plain.append(copy)
    model = train_model(plain, u_pairs=30_000, separate_address=True)
    assert not any(c.name.startswith("identifier:") for c in model.comparisons)
    rng = random.Random(3)
    pairs = [(r, plain[i + 1]) for i, r in enumerate(plain[:-1])] + [(rng.choice(plain), rng.choice(plain))
                                                                     for _ in range(2000)]
    kept = 0
    for a, b in pairs:
        full = model.score(a, b)
        quick = model.score_at_least(a, b, model.review_weight)
        if quick is None:
            assert full[0] < model.review_weight
        else:
            kept += 1
            assert quick == full
    assert kept > 0
