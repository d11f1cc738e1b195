"""Waiting in integration tests for something a running process does: one helper, so every test
polls, tolerates a service not up yet and fails with the same message, and one way to read a
service's JSON answers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, pause: float = 0.3,
             tolerate: tuple[type[Exception], ...] = ()) -> Any:
    """``condition()``'s first truthy result within ``timeout`` seconds; a condition that raises
    OSError, ValueError or KeyError (the service is not answering yet), or one of ``tolerate``,
    counts as not yet."""
    deadline = time.monotonic() + timeout
    not_yet: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, *tolerate)
    while True:
        try:
            result = condition()
        except not_yet:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(pause)


def service_json(port: int, path: str = "/health") -> dict[str, Any]:
    """A local service's JSON answer, an error status's body included (a 503 from /health carries
    its reasons); OSError while the service does not answer, which ``wait_for`` waits out."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read() or b"{}"))
