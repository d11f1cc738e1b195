import pandas as pd
from caselink.linkage.batch import link_dataframe, person_from_row
from caselink.linkage.evaluate import cluster_scores, cross_pairs, pairwise_scores, scores

from tests.linkage_fixtures import trained_model


def test_scores_arithmetic() -> None:
    s = scores({("a", "b"), ("a", "c")}, {("a", "b"), ("b", "c")})
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)


def test_pairwise_scores_from_clusters() -> None:
    predicted = {"1": "x", "2": "x", "3": "x", "4": "y"}
    truth = {"1": "p", "2": "p", "3": "q", "4": "q"}
    s = pairwise_scores(predicted, truth)
    assert s.true_positives == 1 and s.predicted == 3 and s.actual == 2


def test_cross_pairs_only_between_sets() -> None:
    assert cross_pairs({"a1": "x", "a2": "x", "b1": "x"}, {"a1", "a2"}, {"b1"}) == {("a1", "b1"), ("a2", "b1")}


def test_person_from_flat_row() -> None:
    p = person_from_row({"given_names": "Ann", "family_name": float("nan"), "address": "1 High St, Flat 2",
                         "id_nhs_number": "9434765919", "id_upn": None, "postcode": "LS1 1AA"})
    assert p["family_name"] is None
    assert p["identifiers"] == {"nhs_number": "9434765919"}
    assert p["addresses"][0]["lines"] == ["1 High St", "Flat 2"]


def test_link_dataframe_clusters_pairs_and_rejections() -> None:
    df = pd.DataFrame([
        {"record_key": "h:1", "given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03",
         "postcode": "LS6 2AB", "address": "12 Mill Lane", "id_nhs_number": "9434765919"},
        {"record_key": "p:1", "given_names": "Anne", "family_name": "Lee", "date_of_birth": "1990-04-03",
         "postcode": "LS6 2AB", "address": "12 Mill Ln"},
        {"record_key": "p:2", "given_names": "Bob", "family_name": "Stone", "date_of_birth": "1971-11-30",
         "postcode": "B1 1AA", "address": "9 Elm Way"},
        {"record_key": "x:9", "given_names": "Nobody"},
    ])
    result = link_dataframe(df, model=trained_model())
    clusters = dict(zip(result.clusters.record_key, result.clusters.citizen_id, strict=True))
    assert clusters["h:1"] == clusters["p:1"] != clusters["p:2"]
    assert list(result.rejected.record_key) == ["x:9"]
    linked = result.pairs[result.pairs.linked]
    assert {tuple(sorted(x)) for x in linked[["left", "right"]].values} == {("h:1", "p:1")}


def test_cluster_scores_count_only_exact_clusters() -> None:
    predicted = {"1": "x", "2": "x", "3": "y", "4": "z"}
    truth = {"1": "p", "2": "p", "3": "q", "4": "q"}
    s = cluster_scores(predicted, truth)
    assert (s.true_positives, s.predicted, s.actual) == (1, 3, 2)
