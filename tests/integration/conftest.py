"""Integration tests frame events against a real schema registry, started once per session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from caselink.infra.registry_runtime import LocalRegistry
from caselink.schemas.registry import HttpRegistry
from caselink.schemas.serde import default_serde

from caselink.core.settings import Settings


@pytest.fixture(scope="session")
def schema_registry(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ccompat URL of a real registry (Apicurio, as `caselink infra up` runs it), also put in
    CASELINK_REGISTRY__URL so every Settings and every process a test starts uses it. Set
    SCHEMA_REGISTRY_URL to use an existing registry instead."""
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        os.environ["CASELINK_REGISTRY__URL"] = external
        yield external
        return
    directory = Path(tempfile.mkdtemp(prefix="caselink-registry-"))
    registry = LocalRegistry(Settings().infra, directory)
    state = registry.start()
    os.environ["CASELINK_REGISTRY__URL"] = state.url
    try:
        yield state.url
    finally:
        registry.stop()
        os.environ.pop("CASELINK_REGISTRY__URL", None)
        if request.session.testsfailed:
            print(f"\nregistry data and log kept for the failed run: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def registry_bound(schema_registry: str) -> None:
    """The default serde frames against the session's registry (unit tests bind another)."""
    serde = default_serde()
    if getattr(serde._registry, "url", None) != schema_registry:
        serde.bind(HttpRegistry(schema_registry))
