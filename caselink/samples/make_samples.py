"""Regenerates the bundled sample extracts (synthetic people only): python -m caselink.samples.make_samples

Three agencies, three layouts, so the demo exercises the mapping language: a health CSV with
day-first dates and numeric sex codes, a social-care JSONL export with nested objects, and a
police extract in semicolon-separated Windows-1252 with compact dates. A few rows are broken on
purpose (an impossible date, a missing id, an unknown sex code) to show dead letters.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from caselink.linkage.synthetic import SyntheticConfig, agency_records

HERE = Path(__file__).resolve().parent


def main(people: int = 160, seed: int = 2026) -> None:
    cfg = SyntheticConfig(seed=seed, agency_share={"health": 0.95, "social_care": 0.35, "police": 0.3},
                          duplicate_rate=0.02)
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {"health": [], "social_care": [], "police": []}
    for item in agency_records(people, cfg):
        rows[item["agency"]].append(item)

    with (HERE / "health_patients.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "nhs_no", "forename", "surname", "dob", "gender", "address_line1", "town",
                    "postcode", "phone", "attendance_id", "attendance_date", "last_updated"])
        for i, item in enumerate(rows["health"]):
            p = item["person"]
            dob = p["date_of_birth"]
            a = p["addresses"][0]
            w.writerow([item["source_record_id"], p["identifiers"].get("nhs_number", ""), p["given_names"] or "",
                        p["family_name"], f"{dob[8:10]}/{dob[5:7]}/{dob[0:4]}" if dob else "",
                        {"M": "1", "F": "2"}.get(p["sex"] or "", "9"), a["lines"][0], a["locality"],
                        a["postcode"] or "", (p["phones"] or [""])[0], f"AE{i:05d}",
                        f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}", "2026-11-01T09:00:00Z"])
        w.writerow(["HEBAD01", "9434765919", "Broken", "Date", "31/02/2015", "2", "1 Nowhere Road", "Leeds",
                    "LS1 1AA", "", "AE99999", "2026-11-01", "2026-11-01T09:00:00Z"])
        w.writerow(["", "", "No", "Identifier", "01/01/2001", "1", "2 Nowhere Road", "Leeds", "LS1 1AA", "",
                    "AE99998", "2026-11-01", "2026-11-01T09:00:00Z"])

    with (HERE / "social_care_children.jsonl").open("w", encoding="utf-8") as f:
        for i, item in enumerate(rows["social_care"]):
            p = item["person"]
            a = p["addresses"][0]
            given = (p["given_names"] or "").split(" ")[0] or None
            f.write(json.dumps({
                "child_id": item["source_record_id"],
                "name": {"first": given, "last": p["family_name"], "previous": p["other_names"]},
                "birth_date": p["date_of_birth"], "sex": {"F": "Female", "M": "Male"}.get(p["sex"] or "", "Unknown"),
                "nhs": p["identifiers"].get("nhs_number"), "upn": p["identifiers"].get("upn"),
                "home": {"street": a["lines"][0], "city": a["locality"], "postcode": a["postcode"]},
                "case": {"ref": f"SC-{i:04d}", "type": rng.choice(["child_in_need", "child_protection",
                                                                    "early_help"]),
                         "status": rng.choice(["open", "open", "closed"]),
                         "opened": f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}"},
                "modified": "2026-11-02T10:30:00Z",
            }) + "\n")
        f.write(json.dumps({"child_id": "SCBAD01", "name": {"first": "Odd", "last": "Sex"},
                            "birth_date": "2016-05-05", "sex": "Q", "home": {"postcode": "LS2 2BB"},
                            "modified": "2026-11-02T10:30:00Z"}) + "\n")

    with (HERE / "police_nominals.csv").open("w", newline="", encoding="cp1252") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["NOMINAL_REF", "SURNAME", "FORENAMES", "DOB", "SEX", "ADDRESS", "POSTCODE", "NI_NUMBER",
                    "NHS_NUMBER", "INCIDENT_REF", "INCIDENT_TYPE", "RECORDED"])
        for i, item in enumerate(rows["police"]):
            p = item["person"]
            a = p["addresses"][0]
            dob = (p["date_of_birth"] or "").replace("-", "")
            w.writerow([item["source_record_id"], (p["family_name"] or "").upper(), (p["given_names"] or "").upper(),
                        dob, p["sex"] or "", f"{a['lines'][0]}, {a['locality']}", a["postcode"] or "",
                        p["identifiers"].get("ni_number", ""), p["identifiers"].get("nhs_number", ""),
                        f"INC{i:05d}", rng.choice(["missing_person", "domestic_incident", "concern_for_welfare",
                                                   "antisocial_behaviour"]), "2026-11-03 14:00:00"])
        w.writerow(["PO-CAFÉ", "RENÉE", "ZOË", "20120704", "F", "1 Café Street, Leeds", "LS3 3CC", "", "",
                    "INC99999", "concern_for_welfare", "2026-11-03 14:00:00"])
    print({k: len(v) for k, v in rows.items()})


if __name__ == "__main__":
    main()
