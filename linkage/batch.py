"""Linking whole extracts at once: DataFrames in, citizens and pairwise scores out.

The batch linker runs the same engine as the stream (``CitizenIndex``), record by record, so a
backfill and the live pipeline cannot disagree about who is who; what it adds is the DataFrame
plumbing, training when no model is given, a progress bar and the table of scored pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from caselink.linkage.index import CitizenIndex
from caselink.linkage.model import LinkageModel
from caselink.linkage.record import LinkRecord, UnlinkableRecordError, standardise_person
from caselink.linkage.rules import DEFAULT_RULES, LinkageRules
from caselink.linkage.standardise import is_missing
from caselink.linkage.training import learn_placeholders, train_model
from tqdm import tqdm

IDENTIFIER_PREFIX = "id_"


@dataclass
class BatchResult:
    clusters: pd.DataFrame  # record_key, citizen_id
    pairs: pd.DataFrame  # left, right, match_weight, match_probability, linked
    rejected: pd.DataFrame  # record_key, reason
    model: LinkageModel
    index: CitizenIndex


def person_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical Person from a flat row: given_names, family_name, date_of_birth, sex,
    address (lines separated by commas), locality, postcode, and ``id_<scheme>`` columns."""

    def get(name: str) -> Any:
        value = row.get(name)
        return None if is_missing(value) else value

    address = get("address")
    return {
        "given_names": get("given_names"),
        "family_name": get("family_name"),
        "other_names": [n for n in str(get("other_names") or "").split("|") if n],
        "date_of_birth": get("date_of_birth"),
        "sex": get("sex"),
        "identifiers": {
            k[len(IDENTIFIER_PREFIX):]: str(v) for k, v in row.items()
            if k.startswith(IDENTIFIER_PREFIX) and not is_missing(v)
        },
        "addresses": [{"lines": [p.strip() for p in str(address).split(",")] if address else [],
                       "locality": get("locality"), "postcode": get("postcode")}],
        "phones": [str(get("phone"))] if get("phone") else [],
        "emails": [str(get("email"))] if get("email") else [],
    }


def standardise_all(
    items: Iterable[tuple[str, Mapping[str, Any]]], total: int | None = None, progress: bool = False,
    rules: LinkageRules = DEFAULT_RULES,
) -> tuple[list[LinkRecord], list[tuple[str, str]]]:
    records, rejected = [], []
    for key, person in tqdm(items, total=total, disable=not progress, desc="standardise", unit="rec"):
        try:
            records.append(standardise_person(key, person, rules))
        except UnlinkableRecordError as exc:
            rejected.append((key, str(exc)))
    return records, rejected


def train_on_people(
    items: Sequence[tuple[str, Mapping[str, Any]]],
    rules: LinkageRules = DEFAULT_RULES,
    progress: bool = False,
    **options: Any,
) -> LinkageModel:
    """Train a model on a deployment's own records: standardise them under ``rules``, learn
    which names are fillers in this data (``learn_placeholders``), standardise again with
    those counted as missing, then train. ``options`` go to ``train_model``."""
    records, _ = standardise_all(items, len(items), progress, rules)
    given, family = learn_placeholders(records)
    if given or family:
        rules = rules.with_learned(given, family)
        records, _ = standardise_all(items, len(items), progress, rules)
    return train_model(records, rules=rules, **options)


def link_records(
    items: Iterable[tuple[str, Mapping[str, Any]]],
    model: LinkageModel | None = None,
    total: int | None = None,
    progress: bool = False,
    max_citizen_records: int | None = None,
) -> BatchResult:
    """Link (key, person) items; trains a model on them first when none is given."""
    items = list(items)
    if model is None:
        model = train_on_people(items, progress=progress)
    records, rejected = standardise_all(items, total, progress, model.rules)
    index = CitizenIndex(model, max_citizen_records=max_citizen_records)
    pair_rows = []
    for record in tqdm(records, disable=not progress, desc="link", unit="rec"):
        result = index.upsert(record.key, record)
        for c in result.candidates:
            pair_rows.append((c.record_key, record.key, c.weight, c.probability, c.weight >= model.link_weight))
    assignment = index.clusters()
    clusters = pd.DataFrame(sorted(assignment.items()), columns=["record_key", "citizen_id"])
    # ``linked``: the pair scored at or above the link threshold and its records are one citizen
    # (a link refused by an identifier, a reviewer or the size guard scores high but is not made).
    pairs = pd.DataFrame(
        [(left, right, w, p, above, above and assignment.get(left) == assignment.get(right) is not None)
         for left, right, w, p, above in pair_rows],
        columns=["left", "right", "match_weight", "match_probability", "above_link_threshold", "linked"])
    return BatchResult(clusters, pairs, pd.DataFrame(rejected, columns=["record_key", "reason"]), model, index)


def link_dataframe(
    df: pd.DataFrame, key_column: str = "record_key", model: LinkageModel | None = None, progress: bool = False
) -> BatchResult:
    """Link a DataFrame of flat canonical columns (see ``person_from_row``)."""
    rows: list[dict[str, Any]] = df.to_dict("records")  # type: ignore[assignment]  # column names are str
    return link_records([(str(r[key_column]), person_from_row(r)) for r in rows], model,
                        total=len(rows), progress=progress)
