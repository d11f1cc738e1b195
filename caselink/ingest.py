"""The HTTP ingest service as deployed: the connectors' app with the consent gate's policy check.

``caselink.connectors.http_ingest`` sits below the gate (``caselink.streams.consent``), which owns
the consent policy; this module, above both, joins them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from caselink.connectors.http_ingest import ConsentCheck, ConsentCheckUnavailable, create_ingest_app
from caselink.core.settings import Settings
from caselink.streams.consent.gate_loop import policy_path
from caselink.streams.consent.policy import PolicyError, load_policy
from caselink.streams.consent.register import validate_consent


def policy_consent_check(settings: Settings) -> ConsentCheck:
    """Checks a request's consents against the policy file as it is now (read once per request)."""

    def check(events: list[dict[str, Any]]) -> list[list[str]]:
        try:
            policy = load_policy(policy_path(settings))
        except PolicyError:
            raise ConsentCheckUnavailable("the consent policy is invalid; consents cannot be checked now") from None
        return [validate_consent(event, policy) for event in events]

    return check


def ingest_app(settings: Settings) -> FastAPI:
    return create_ingest_app(settings, policy_consent_check(settings))
