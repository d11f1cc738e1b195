"""How hard the property tests try, from ``CASELINK_HYPOTHESIS``: ``dev`` (the default: quick, for
``make unit`` and a developer's own pytest) or ``ci`` (``make test``: every example count as written).

The profiles themselves are registered in ``tests/conftest.py``; a test that asks for a number of
examples asks through ``examples(n)``, ``n`` being its depth in CI.
"""

from __future__ import annotations

import os

PROFILE = os.environ.get("CASELINK_HYPOTHESIS", "dev")
if PROFILE not in ("dev", "ci"):
    raise ValueError(f"CASELINK_HYPOTHESIS={PROFILE!r}: expected dev or ci")
DEV_SHARE = 20  # the dev profile tries one example in DEV_SHARE of the CI depth


def examples(ci: int) -> int:
    """``ci`` examples in CI; a twentieth of them (at least 10) in the dev profile."""
    return ci if PROFILE == "ci" else max(10, ci // DEV_SHARE)
