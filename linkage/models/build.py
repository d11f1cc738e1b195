"""Rebuild the bundled default model from synthetic data: python -m caselink.linkage.models.build"""

from __future__ import annotations

from caselink.linkage.batch import train_on_people
from caselink.linkage.models import DEFAULT_MODEL_PATH
from caselink.linkage.synthetic import records_for_size


def main(n_records: int = 100_000) -> None:
    items = [(f"{r['agency']}:{r['source_record_id']}", r["person"]) for r in records_for_size(n_records, seed=101)]
    model = train_on_people(items, version="default-synthetic-v2")
    model.metadata["trained_at"] = "build"  # keep the file reproducible byte for byte
    model.save(DEFAULT_MODEL_PATH)
    print(f"wrote {DEFAULT_MODEL_PATH} ({model.metadata['records']} training records)")


if __name__ == "__main__":
    main()
