"""Credentials for the worker's web API: roles, sessions, refusals (no server needed)."""

import pytest
from caselink.streams.web_auth import Authenticator, Principal, Refusal

TOKENS = {"ann": {"role": "reader", "token": "r" * 20}, "bob": {"role": "reviewer", "token": "v" * 20},
          "ops": {"role": "operator", "token": "o" * 20}}


def test_roles_include_the_ones_below() -> None:
    auth = Authenticator(TOKENS)
    assert auth.check("Bearer " + "r" * 20, None, "reader") == Principal("ann", "reader")
    assert auth.check("Bearer " + "r" * 20, None, "reviewer") == Refusal(403, "ann is a reader; this needs a reviewer")
    assert auth.check("Bearer " + "v" * 20, None, "reviewer") == Principal("bob", "reviewer")
    assert isinstance(auth.check("Bearer " + "o" * 20, None, "reviewer"), Principal)


def test_no_or_wrong_credentials_are_401_and_no_tokens_closes_the_api() -> None:
    auth = Authenticator(TOKENS)
    assert auth.check(None, None, "reader").status == 401
    assert auth.check("Bearer nope", None, "reader").status == 401
    assert auth.check("Basic " + "r" * 20, None, "reader").status == 401
    closed = Authenticator({})
    assert closed.check("Bearer " + "r" * 20, None, "reader").status == 401


def test_a_session_stands_for_its_token_until_it_ends() -> None:
    auth = Authenticator(TOKENS, session_ttl_s=60)
    assert auth.login("wrong") is None
    session, who = auth.login("v" * 20)
    assert who == Principal("bob", "reviewer")
    assert auth.check(None, session, "reviewer") == who
    # A change made with the cookie must come from this site; a bearer token needs no such check.
    assert auth.check(None, session, "reviewer", cookie_write=True, same_origin=False).status == 403
    assert auth.check("Bearer " + "v" * 20, None, "reviewer", cookie_write=True, same_origin=False) == who
    auth.logout(session)
    assert auth.check(None, session, "reader").status == 401
    expired = Authenticator(TOKENS, session_ttl_s=1e-9)
    session, _ = expired.login("r" * 20)
    assert expired.check(None, session, "reader").status == 401


def test_bad_configuration_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="role"):
        Authenticator({"x": {"role": "admin", "token": "t" * 20}})
    with pytest.raises(ValueError, match="16 characters"):
        Authenticator({"x": {"role": "reader", "token": "short"}})
