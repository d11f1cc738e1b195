"""An in-process stand-in for the schema registry, for unit tests only.

Unit tests encode and decode events without a JVM; the serde needs a registry for its framing, so
they get this one. It behaves as the real one does where caselink depends on it: one id per
schema content across subjects (Apicurio's ccompat content ids, Confluent's global ids), a
subject's versions in order, and BACKWARD checked against the subject's latest version with Avro's
own checker. Integration tests run against a real registry (tests/conftest.py).
"""

from __future__ import annotations

import json

from caselink.schemas.compat import check_pair
from caselink.schemas.registry import RegistryError, SchemaNotFoundError


class MemoryRegistry:
    url = "memory:"

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.texts: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.compatibility: dict[str, str] = {}

    def register(self, subject: str, schema: str) -> int:
        key = json.dumps(json.loads(schema), sort_keys=True)
        versions = self.subjects.setdefault(subject, [])
        known = self.ids.get(key)
        if known is not None and known in versions:
            return known
        if versions and self.compatibility.get(subject) == "BACKWARD":
            problems = check_pair(schema, self.texts[versions[-1]])
            if problems:
                raise RegistryError(f"incompatible with the latest version of {subject}: {problems}")
        schema_id = known if known is not None else len(self.texts) + 1
        self.ids[key] = schema_id
        self.texts[schema_id] = schema
        versions.append(schema_id)
        return schema_id

    def schema_text(self, schema_id: int) -> str:
        try:
            return self.texts[schema_id]
        except KeyError:
            raise SchemaNotFoundError(f"schema id {schema_id} is not in the registry") from None

    def set_compatibility(self, subject: str, level: str) -> None:
        self.compatibility[subject] = level
