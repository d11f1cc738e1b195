"""Rebuild the bundled default model from synthetic data: python -m caselink.linkage.models.build"""

from __future__ import annotations

from caselink.linkage.models import DEFAULT_MODEL_PATH
from caselink.linkage.record import standardise_person
from caselink.linkage.synthetic import records_for_size
from caselink.linkage.training import train_model


def main(n_records: int = 100_000) -> None:
    records = [standardise_person(f"{r['agency']}:{r['source_record_id']}", r["person"])
               for r in records_for_size(n_records, seed=101)]
    model = train_model(records, version="default-synthetic-v1")
    model.metadata["trained_at"] = "build"  # keep the file reproducible byte for byte
    model.save(DEFAULT_MODEL_PATH)
    print(f"wrote {DEFAULT_MODEL_PATH} ({len(records)} training records)")


if __name__ == "__main__":
    main()
