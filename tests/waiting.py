"""Waiting in integration tests for something a running process does: one helper, so every test
polls, tolerates a service not up yet and fails with the same message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, pause: float = 0.3) -> Any:
    """``condition()``'s first truthy result within ``timeout`` seconds; a condition that raises
    OSError, ValueError or KeyError (the service is not answering yet) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (OSError, ValueError, KeyError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(pause)
