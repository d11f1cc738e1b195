"""Unit tests frame events against an in-process registry (tests/memory_registry.py), never a JVM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from caselink.schemas import registry as registry_module
from caselink.schemas.serde import default_serde

from tests.memory_registry import MemoryRegistry

MEMORY = MemoryRegistry()
default_serde().bind(MEMORY)  # before collection: some test modules encode events when imported


@pytest.fixture(autouse=True)
def memory_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryRegistry]:
    """Every serde made in a unit test that is not given a registry gets the shared in-process one;
    the default serde too (the session's integration tests, run first, bind it to the real one)."""
    monkeypatch.setattr(registry_module, "registry_from_settings", lambda _settings: MEMORY)
    serde = default_serde()
    if serde._registry is not MEMORY:
        serde.bind(MEMORY)
    yield MEMORY
