"""Who may use the worker's web API: bearer tokens per person, each with a role; browser sessions.

Why: ``/citizens``, ``/records`` and the review page show personal data, and ``POST
/review/decide`` merges or splits people; they answered anyone who reached the port, and the
reviewer's name was whatever was typed. Now every such request needs a credential:

* a bearer token (``Authorization: Bearer ...``), configured per person with a role, from the
  environment only (``CASELINK_WEB__TOKENS='{"alice": {"role": "reviewer", "token": "..."}}'``);
* or, for the review page in a browser, a session cookie got by signing in with that token at
  ``/login`` (HttpOnly, SameSite=Strict, Secure under TLS; in memory, so a restart signs everyone out).

Roles, each allowed what the ones before it are: ``reader`` (citizens, records, the review
queue), ``reviewer`` (decides review pairs, recorded under the credential's name, never a typed
one), ``operator`` (everything). ``/health`` and ``/metrics`` stay open (no personal data). With
no tokens configured, every protected request is refused: the API fails closed.

Pure: no web framework here, so it is tested without a server (``streams/app.py`` wires it in).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("reader", "reviewer", "operator")
COOKIE = "caselink_session"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Refusal:
    status: int  # 401: who are you?  403: not allowed
    reason: str


class Authenticator:
    """Checks credentials against the configured tokens and keeps browser sessions."""

    def __init__(self, tokens: dict[str, Any], session_ttl_s: float = 8 * 3600) -> None:
        """``tokens``: name -> an object with ``role`` and ``token`` (a pydantic SecretStr or a str)."""
        self._tokens: list[tuple[bytes, Principal]] = []
        for name, entry in tokens.items():
            role = entry.role if hasattr(entry, "role") else entry["role"]
            raw = entry.token if hasattr(entry, "token") else entry["token"]
            secret = raw.get_secret_value() if hasattr(raw, "get_secret_value") else str(raw)
            if role not in ROLES:
                raise ValueError(f"web token {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
            if len(secret) < 16:
                raise ValueError(f"web token {name!r}: at least 16 characters, please (a random one)")
            self._tokens.append((secret.encode(), Principal(name, role)))
        self.session_ttl_s = session_ttl_s
        self._sessions: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def from_token(self, token: str) -> Principal | None:
        """The principal of a token; every configured token is compared, in constant time."""
        given = token.encode()
        found = None
        for secret, principal in self._tokens:
            if hmac.compare_digest(secret, given):
                found = principal
        return found

    def login(self, token: str) -> tuple[str, Principal] | None:
        """A new session for a valid token: (session id for the cookie, principal)."""
        principal = self.from_token(token)
        if principal is None:
            return None
        session = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
            self._sessions[session] = (principal, now + self.session_ttl_s)
        return session, principal

    def logout(self, session: str | None) -> None:
        if session:
            with self._lock:
                self._sessions.pop(session, None)

    def from_session(self, session: str | None) -> Principal | None:
        if not session:
            return None
        with self._lock:
            found = self._sessions.get(session)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def check(self, authorization: str | None, session: str | None, role: str,
              cookie_write: bool = False, same_origin: bool = True) -> Principal | Refusal:
        """The principal a request acts as, if it may act as ``role``; else why not.

        ``cookie_write``: a request that changes something; with a session cookie (not a bearer
        token) it must come from this origin (``same_origin``), so another site cannot make a
        signed-in browser send it."""
        if not self._tokens:
            return Refusal(401, "no credentials are configured (CASELINK_WEB__TOKENS): the web API is closed")
        principal = None
        via_cookie = False
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return Refusal(401, "the Authorization header must be 'Bearer <token>'")
            principal = self.from_token(token.strip())
            if principal is None:
                return Refusal(401, "unknown token")
        else:
            principal = self.from_session(session)
            via_cookie = principal is not None
        if principal is None:
            return Refusal(401, "sign in: a bearer token or a session is required")
        if not principal.may(role):
            return Refusal(403, f"{principal.name} is a {principal.role}; this needs a {role}")
        if cookie_write and via_cookie and not same_origin:
            return Refusal(403, "a change made with a session must come from this site")
        return principal


def refused(method: str, path: str, peer: str | None, refusal: Refusal) -> None:
    """Log a refused request (never the credential itself)."""
    log.warning("refused %s %s from %s: %d %s", method, path, peer or "?", refusal.status, refusal.reason)
