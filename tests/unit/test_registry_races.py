"""The registry client against what a registry answers when two processes set a subject up at once."""

from __future__ import annotations

from typing import Any

import pytest
from caselink.schemas.registry import HttpRegistry, RegistryError


class _Conflict(Exception):
    http_status_code = 409


class _Client:
    """Refuses the first ``conflicts`` PUTs of a rule as Apicurio does when another process has just
    created it, then takes them."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts, self.set = conflicts, []

    def set_compatibility(self, subject: str, level: str) -> Any:
        if self.conflicts:
            self.conflicts -= 1
            raise _Conflict("A rule named 'COMPATIBILITY' already exists.")
        self.set.append((subject, level))


def _registry(client: _Client) -> HttpRegistry:
    registry = HttpRegistry("http://127.0.0.1:1")  # never called: the client is replaced
    registry._client = client  # type: ignore[assignment]
    return registry


def test_a_rule_another_process_created_meanwhile_is_set_again() -> None:
    client = _Client(conflicts=1)
    _registry(client).set_compatibility("caselink.Disclosure", "BACKWARD")
    assert client.set == [("caselink.Disclosure", "BACKWARD")]


def test_a_registry_that_keeps_refusing_is_an_error() -> None:
    with pytest.raises(RegistryError, match="refused BACKWARD"):
        _registry(_Client(conflicts=5)).set_compatibility("caselink.Disclosure", "BACKWARD")
