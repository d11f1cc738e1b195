"""A HELD-OUT evaluation data set from pseudopeople (IHME): four noisy US administrative datasets with truth.

    /work/.pp-venv/bin/python benchmarks/heldout_pseudopeople.py --out /work/heldout_pseudopeople [--seed 0]
    .venv/bin/python benchmarks/heldout_pseudopeople.py --check /work/heldout_pseudopeople   # mappings only

Nobody tunes caselink on this data: it exists to be linked once, by a finished linker, and reported
separately from the benchmarks the linker was developed on. See docs/heldout-data.md.

The first form runs in a virtualenv of its own (pseudopeople pulls vivarium, pandas 3, numpy 2...,
which must not disturb the project's venv). From pseudopeople's bundled sample population ("Anytown",
WA) with its DEFAULT noise configuration and the given seed, it writes to --out, for the year 2020
(the one year the four overlap in: the census is decennial, WIC and the 1040 are yearly, the SSA
file is cumulative up to the year):

* ``census.csv``, ``social_security.csv``, ``tax_1040.csv``, ``wic.csv``: each dataset in its own
  column names and formats, values as noised (never cleaned), with a ``row_id`` column added (none
  of them has a record id of its own) and pseudopeople's ``simulant_id`` and ``household_id``
  removed (they are the truth). The 1040 is one row per person on the form: the primary filer, the
  joint filer (pseudopeople's ``spouse_*`` columns) and up to four dependents, each with the form's
  mailing address, plus ``form_id`` and ``filer_role``;
* ``truth.csv``: ``record_key`` (``<agency>:<row_id>``) and ``person_id`` (the simulant_id);
* ``mappings/<agency>.yaml``: mapping files written from docs/mapping-language.md alone;
* ``summary.json``: seed, year, versions, counts, and the SHA-256 of every file written.

Then it runs the second form with the project's own python (``--project-python``, default
``.venv/bin/python``), which loads each mapping with the project's mapping loader and applies it to
every row: a check of the mappings (rows rejected, and why), never of the linker. It writes
``mapping_check.json``. No linkage is run here and no linkage figure is computed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
YEAR = 2020
AGENCIES = ("census", "social_security", "tax_1040", "wic")
TRUTH_COLUMNS = ("simulant_id", "household_id")  # pseudopeople's ids: truth, kept out of the agency files
TAX_ADDRESS = ("mailing_address_street_number", "mailing_address_street_name", "mailing_address_unit_number",
               "mailing_address_po_box", "mailing_address_city", "mailing_address_state", "mailing_address_zipcode")
TAX_ROLES = (  # filer_role, (first name, middle initial, last name, ssn) columns, column of the truth id
    ("primary", ("first_name", "middle_initial", "last_name", "ssn"), "simulant_id"),
    ("joint_filer", ("spouse_first_name", "spouse_middle_initial", "spouse_last_name", "spouse_ssn"),
     "spouse_simulant_id"),
    *((f"dependent_{k}", (f"dependent_{k}_first_name", None, f"dependent_{k}_last_name", f"dependent_{k}_ssn"),
       f"dependent_{k}_simulant_id") for k in range(1, 5)),
)

# --------------------------------------------------------------------------- the mappings
# Written as a new user would from docs/mapping-language.md alone, against the columns as generated.
MAPPINGS = {
    "census": """\
# Decennial Census 2020 (pseudopeople sample population, default noise): one row per person enumerated.
# HELD-OUT evaluation data: do not tune on it (docs/heldout-data.md).
agency: census
description: pseudopeople Decennial Census 2020, Anytown WA sample, default noise (held out)
source: {kind: csv, path: ../census.csv, delimiter: ",", encoding: utf-8}
record_id: row_id                     # added by the generator: the census has no record id of its own
fields:
  given_names: {from: [first_name, middle_initial]}
  family_name: last_name
  # The census writes dates as MM/DD/YYYY. Noise (typos, OCR errors, wrong digits, month and day
  # swapped) makes some of them impossible dates, and the mapping language has no way to drop only
  # a bad date: such a row is rejected whole. The census also has an `age` column, which has no
  # place in the mapping.
  date_of_birth: {from: date_of_birth, format: "%m/%d/%Y"}
  sex: {from: sex, map: {Female: F, Male: M}}
  # The census has no SSN.
  addresses:
    # The mapping language cannot build one address line out of several columns: each column of
    # `lines` becomes a line of its own (a `join` is ignored there), so the house number is a line
    # by itself, the street name the next, the unit (e.g. "apartment b") the third.
    - lines: {from: [street_number, street_name, unit_number]}
      locality: city
      region: state
      postcode: zipcode
      country: {value: US}
""",
    "social_security": """\
# Social Security Administration records up to the end of 2020 (pseudopeople sample population,
# default noise): one row per event (an SSN's creation, a death), so a person can have several rows.
# HELD-OUT evaluation data: do not tune on it (docs/heldout-data.md).
agency: social_security
description: pseudopeople SSA events up to 2020, Anytown WA sample, default noise (held out)
source: {kind: csv, path: ../social_security.csv, delimiter: ",", encoding: utf-8}
record_id: row_id                     # added by the generator: the SSA file has no record id of its own
fields:
  given_names: {from: [first_name, middle_name]}
  family_name: last_name
  # SSA writes dates as YYYYMMDD. A noised date that is not a real date rejects the whole row:
  # the mapping language cannot drop just that field.
  date_of_birth: {from: date_of_birth, format: "%Y%m%d"}
  sex: {from: sex, map: {Female: F, Male: M}}
  identifiers:
    ssn: ssn                          # "123-45-6789" as written
  # No address in the SSA file. event_type / event_date (creation, death) are not mapped: a death
  # is not a person field, and as a case its noised dates would reject more rows.
""",
    "tax_1040": """\
# IRS Form 1040 for tax year 2020 (pseudopeople sample population, default noise), one row per
# person on a form: the primary filer, the joint filer (pseudopeople's spouse_* columns) and up to
# four dependents, each with the form's mailing address (the generator melted the wide form).
# HELD-OUT evaluation data: do not tune on it (docs/heldout-data.md).
agency: tax_1040
description: pseudopeople 1040 forms for 2020, one row per person on a form, Anytown WA sample (held out)
source: {kind: csv, path: ../tax_1040.csv, delimiter: ",", encoding: utf-8}
record_id: row_id                     # <form_id>-<filer_role>, made by the generator
fields:
  given_names: {from: [first_name, middle_initial]}   # dependents have no middle initial on a 1040
  family_name: last_name
  # A 1040 holds no date of birth and no sex.
  identifiers:
    ssn: ssn
  addresses:
    # Each column of `lines` is a line of its own (the language cannot join the number and the
    # street into one line). A form has either a street address or a PO box; the box is a bare
    # number here, and the language cannot prefix it with "PO Box".
    - lines: {from: [mailing_address_street_number, mailing_address_street_name,
                     mailing_address_unit_number, mailing_address_po_box]}
      locality: mailing_address_city
      region: mailing_address_state
      postcode: mailing_address_zipcode
      country: {value: US}
""",
    "wic": """\
# WIC (Special Supplemental Nutrition Program for Women, Infants, and Children): people enrolled at
# the end of 2020 (pseudopeople sample population, default noise).
# HELD-OUT evaluation data: do not tune on it (docs/heldout-data.md).
agency: wic
description: pseudopeople WIC enrolment at the end of 2020, Anytown WA sample, default noise (held out)
source: {kind: csv, path: ../wic.csv, delimiter: ",", encoding: utf-8}
record_id: row_id                     # added by the generator: the WIC file has no record id of its own
fields:
  given_names: {from: [first_name, middle_initial]}
  family_name: last_name
  # WIC writes dates as MMDDYYYY, without separators. A noised date that is not a real date
  # rejects the whole row: the mapping language cannot drop just that field.
  date_of_birth: {from: date_of_birth, format: "%m%d%Y"}
  sex: {from: sex, map: {Female: F, Male: M}}
  # WIC has no SSN.
  addresses:
    # Each column of `lines` is a line of its own: the language cannot join number and street.
    - lines: {from: [street_number, street_name, unit_number]}
      locality: city
      region: state
      postcode: zipcode
      country: {value: US}
""",
}


# --------------------------------------------------------------------------- generation (pseudopeople venv)
def _text_frame(df: Any) -> Any:
    """Every value as the text it is, a missing one as an empty cell (no float '14011.0', no 'nan')."""
    out = df.astype(object)
    return out.where(df.notna(), "").map(str)


def _melt_1040(forms: Any) -> tuple[Any, Any]:
    """The wide 1040 as one row per person on the form, and each row's simulant_id.

    The generated 1040 carries only the primary filer's simulant_id; the joint filer's and the
    dependents' are in the sample population the forms were noised from (same rows, same order:
    the default configuration omits no 1040 rows), so they are taken from there by the primary's id.
    """
    import pandas as pd
    from pseudopeople.constants import paths

    ids = ["simulant_id", *(role[2] for role in TAX_ROLES[1:])]
    sample = Path(paths.SAMPLE_DATA_ROOT) / "taxes_1040" / "taxes_1040.parquet"
    raw = pd.read_parquet(sample, columns=[*ids, "tax_year"])
    raw = raw[raw["tax_year"] == YEAR].drop(columns="tax_year")
    raw["simulant_id"] = raw["simulant_id"].astype(str)
    if not raw["simulant_id"].is_unique:
        raise SystemExit(f"the sample 1040s for {YEAR} have two forms for one primary filer: cannot attach the truth")
    forms = forms.reset_index(drop=True)
    primary = forms["simulant_id"].astype(str)
    if not primary.isin(raw["simulant_id"]).all():
        raise SystemExit("a generated 1040 has a primary filer missing from the sample population")
    truth_ids = raw.set_index("simulant_id").reindex(primary.values).reset_index(drop=True)
    truth_ids["simulant_id"] = primary.values

    form_id = pd.Series([f"F{i + 1:06d}" for i in range(len(forms))])
    parts = []
    for order, (role, (first, middle, last, ssn), id_column) in enumerate(TAX_ROLES):
        present = truth_ids[id_column].notna()
        part = pd.DataFrame({
            "form_id": form_id[present],
            "filer_role": role,
            "first_name": forms.loc[present, first],
            "middle_initial": forms.loc[present, middle] if middle else None,
            "last_name": forms.loc[present, last],
            "ssn": forms.loc[present, ssn],
            **{column: forms.loc[present, column] for column in TAX_ADDRESS},
            "tax_year": forms.loc[present, "tax_year"],
            "_person": truth_ids.loc[present, id_column].astype(str),
            "_form": forms.index[present.to_numpy()],
            "_order": order,
        })
        parts.append(part)
    people = pd.concat(parts, ignore_index=True).sort_values(["_form", "_order"], kind="stable")
    people.insert(0, "row_id", people["form_id"] + "-" + people["filer_role"])
    person = people.pop("_person").reset_index(drop=True)
    return people.drop(columns=["_form", "_order"]).reset_index(drop=True), person


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pairs(counts: Counter[str]) -> int:
    return sum(n * (n - 1) // 2 for n in counts.values())


def truth_stats(truth: list[tuple[str, str]]) -> dict[str, Any]:
    """Rows, distinct people and true matching pairs (all pairs of records of one person)."""
    per_agency: dict[str, Counter[str]] = defaultdict(Counter)
    for key, person in truth:
        per_agency[key.split(":", 1)[0]][person] += 1
    everyone: Counter[str] = Counter()
    for counts in per_agency.values():
        everyone.update(counts)
    within = {a: _pairs(c) for a, c in per_agency.items()}
    cross = {f"{a}~{b}": sum(per_agency[a][p] * per_agency[b][p] for p in per_agency[a].keys() & per_agency[b].keys())
             for a, b in combinations(sorted(per_agency), 2)}
    return {
        "rows": {a: sum(c.values()) for a, c in per_agency.items()},
        "distinct_people": {a: len(c) for a, c in per_agency.items()},
        "distinct_people_all": len(everyone),
        "people_in_more_than_one_agency": sum(1 for p in everyone if sum(p in c for c in per_agency.values()) > 1),
        "true_pairs_total": _pairs(everyone),
        "true_pairs_within_agency": within,
        "true_pairs_across_agencies": cross,
    }


def generate(out: Path, seed: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import pseudopeople as psp

    started = time.perf_counter()
    generated = {
        "census": psp.generate_decennial_census(seed=seed, year=YEAR),
        "social_security": psp.generate_social_security(seed=seed, year=YEAR),
        "tax_1040": psp.generate_taxes_1040(seed=seed, year=YEAR),
        "wic": psp.generate_women_infants_and_children(seed=seed, year=YEAR),
    }
    generated_s = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "mappings").mkdir(exist_ok=True)
    prefixes = {"census": "CEN", "social_security": "SSA", "wic": "WIC"}
    truth: list[tuple[str, str]] = []
    wide_1040_forms = len(generated["tax_1040"])
    for agency in AGENCIES:
        df = generated[agency]
        if agency == "tax_1040":
            table, person = _melt_1040(df)
        else:
            df = df.reset_index(drop=True)
            person = df["simulant_id"].map(str)
            table = df.drop(columns=[c for c in TRUTH_COLUMNS if c in df.columns])
            table.insert(0, "row_id", [f"{prefixes[agency]}{i + 1:07d}" for i in range(len(table))])
        _text_frame(table).to_csv(out / f"{agency}.csv", index=False, lineterminator="\n")
        truth.extend(zip((f"{agency}:{r}" for r in table["row_id"]), person, strict=True))
        (out / "mappings" / f"{agency}.yaml").write_text(MAPPINGS[agency], encoding="utf-8")
    with (out / "truth.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["record_key", "person_id"])
        writer.writerows(truth)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("summary.json", "mapping_check.json"))
    summary = {
        "what": "HELD-OUT evaluation data for caselink: do not tune on it; see docs/heldout-data.md",
        "source": "pseudopeople bundled sample population (Anytown, WA), default noise configuration",
        "seed": seed,
        "year": YEAR,
        "versions": {"python": sys.version.split()[0], "pseudopeople": psp.__version__,
                     "pandas": pd.__version__, "numpy": np.__version__},
        "generate_seconds": round(generated_s, 1),
        "tax_1040_forms": wide_1040_forms,
        **truth_stats(truth),
        "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def print_summary(s: dict[str, Any]) -> None:
    print(f"pseudopeople {s['versions']['pseudopeople']} (pandas {s['versions']['pandas']}, numpy "
          f"{s['versions']['numpy']}), seed {s['seed']}, year {s['year']}: generated in {s['generate_seconds']} s")
    print(f"{'agency':<16} {'rows':>7} {'people':>7} {'pairs within':>13}")
    for agency in AGENCIES:
        print(f"{agency:<16} {s['rows'][agency]:>7,} {s['distinct_people'][agency]:>7,} "
              f"{s['true_pairs_within_agency'][agency]:>13,}")
    print(f"(tax_1040: {s['tax_1040_forms']:,} forms melted to one row per filer, joint filer and dependent)")
    print(f"distinct simulants: {s['distinct_people_all']:,} ({s['people_in_more_than_one_agency']:,} in more than one "
          f"agency); true matching pairs: {s['true_pairs_total']:,} "
          f"(within agencies {sum(s['true_pairs_within_agency'].values()):,}, "
          f"across {sum(s['true_pairs_across_agencies'].values()):,})")
    for pair, n in s["true_pairs_across_agencies"].items():
        print(f"  {pair:<34} {n:>7,}")


# --------------------------------------------------------------------------- mapping check (project venv)
def _mapping_loader() -> tuple[Any, Any]:
    sys.path.insert(0, str(ROOT))
    try:
        from caselink.connectors.mapping import RowError, load_mapping
    except ImportError as old_layout:  # the tree is moving to caselink.connectors
        try:
            from caselink.connectors.mapping import RowError, load_mapping  # type: ignore[no-redef]
        except ImportError as new_layout:
            raise SystemExit(f"cannot import the project's mapping loader (run this with the project's python): "
                             f"connectors.mapping: {old_layout}; caselink.connectors.mapping: {new_layout}") from None
    return load_mapping, RowError


def check_mappings(out: Path) -> dict[str, Any]:
    """Load each mapping with the project's loader, apply it to every row; count and explain rejections."""
    load_mapping, row_error = _mapping_loader()
    with (out / "truth.csv").open(encoding="utf-8", newline="") as handle:
        truth = {row["record_key"]: row["person_id"] for row in csv.DictReader(handle)}
    report: dict[str, Any] = {}
    accepted_truth: list[tuple[str, str]] = []
    for agency in AGENCIES:
        mapping = load_mapping(out / "mappings" / f"{agency}.yaml")
        if mapping.agency != agency:
            raise SystemExit(f"{agency}.yaml says agency {mapping.agency!r}")
        source = (out / "mappings" / mapping.source["path"]).resolve()
        reasons: Counter[tuple[str, str]] = Counter()
        examples: dict[tuple[str, str], list[str]] = defaultdict(list)
        coverage: Counter[str] = Counter()
        rows = accepted = unknown_keys = 0
        first = None
        with source.open(encoding=mapping.source.get("encoding", "utf-8"), newline="") as handle:
            for row in csv.DictReader(handle, delimiter=mapping.source.get("delimiter", ",")):
                rows += 1
                try:
                    mapped = mapping.apply(row)
                except row_error as exc:
                    why = (exc.field, re.sub(r"'[^']*'", "<value>", exc.reason))
                    reasons[why] += 1
                    if len(examples[why]) < 3:
                        examples[why].append(re.findall(r"'[^']*'", exc.reason)[0] if "'" in exc.reason
                                             else exc.reason)
                    continue
                accepted += 1
                key = f"{agency}:{mapped.record_id}"
                if key in truth:
                    accepted_truth.append((key, truth[key]))
                else:
                    unknown_keys += 1
                person = mapped.person
                first = first or person
                for name in ("given_names", "family_name", "date_of_birth", "sex"):
                    coverage[name] += person[name] is not None
                coverage["ssn"] += "ssn" in person["identifiers"]
                coverage["address"] += bool(person["addresses"])
        report[agency] = {
            "rows": rows, "accepted": accepted, "rejected": rows - accepted,
            "record_keys_not_in_truth": unknown_keys,
            "reasons": [{"field": f, "reason": r, "rows": n, "examples": examples[(f, r)]}
                        for (f, r), n in reasons.most_common()],
            "accepted_with": {name: n for name, n in coverage.items() if n},
            "example_person": first,
        }
    stats = truth_stats(accepted_truth)
    report["_accepted_rows"] = {"distinct_people_all": stats["distinct_people_all"],
                                "true_pairs_total": stats["true_pairs_total"]}
    (out / "mapping_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report


def print_check(report: dict[str, Any]) -> None:
    print("mapping check (the project's mapping loader on every row; no linkage):")
    for agency in AGENCIES:
        r = report[agency]
        print(f"  {agency:<16} {r['rows']:>7,} rows, {r['accepted']:>7,} mapped, {r['rejected']:>5,} rejected "
              f"({100 * r['rejected'] / max(r['rows'], 1):.2f}%)"
              + (f"; {r['record_keys_not_in_truth']} keys not in truth.csv" if r["record_keys_not_in_truth"] else ""))
        for reason in r["reasons"][:5]:
            print(f"      {reason['rows']:>5,}  {reason['field']}: {reason['reason']}  "
                  f"e.g. {', '.join(reason['examples'])}")
        have = ", ".join(f"{k} {v / max(r['accepted'], 1):.1%}" for k, v in r["accepted_with"].items())
        print(f"      mapped rows with: {have}")
    a = report["_accepted_rows"]
    print(f"  true matching pairs among the mapped rows: {a['true_pairs_total']:,} "
          f"({a['distinct_people_all']:,} distinct simulants)")


# --------------------------------------------------------------------------- command line
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory to write the data set into (created)")
    parser.add_argument("--seed", type=int, default=0, help="pseudopeople's noise seed (default 0)")
    parser.add_argument("--check", type=Path, metavar="DIR",
                        help="only check the mappings of a generated DIR (run with the project's python)")
    parser.add_argument("--project-python", type=Path, default=ROOT / ".venv" / "bin" / "python",
                        help="the project's python, for the mapping check after generating")
    parser.add_argument("--no-check", action="store_true", help="generate only")
    args = parser.parse_args()
    if args.check:
        print_check(check_mappings(args.check))
        return
    if args.out is None:
        parser.error("--out DIR is required (or --check DIR)")
    print_summary(generate(args.out, args.seed))
    if args.no_check:
        return
    if not args.project_python.exists():
        print(f"no {args.project_python}: check the mappings with "
              f"<project python> {Path(__file__).name} --check {args.out}")
        return
    subprocess.run([str(args.project_python), __file__, "--check", str(args.out)], check=True)


if __name__ == "__main__":
    main()
