"""schemas/records.py is what schemas/typed_records.py writes from the .avsc files, and says what a
decoded event holds."""

from __future__ import annotations

import json
from typing import get_type_hints

import pytest
from caselink.schemas import SCHEMA_NAMES, default_serde, records, typed_records
from caselink.schemas.serde import SCHEMA_DIR

from tests.samples import sample


def test_records_module_is_generated_from_the_current_schemas() -> None:
    assert typed_records.TARGET.read_text() == typed_records.render(), (
        "schemas/records.py is stale: run python -m caselink.schemas.typed_records")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_each_record_has_the_schemas_fields_and_a_decoded_event_has_them(name: str) -> None:
    typed = getattr(records, name)
    fields = [f["name"] for f in json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())["fields"]]
    assert list(get_type_hints(typed)) == fields
    serde = default_serde()
    _, decoded = serde.decode(serde.encode(name, sample(name)))
    assert list(decoded) == fields
