"""`caselink consent record` refuses flags that contradict each other, before anything is published.

Each case exits 1 with the reason on stderr; ``_publish`` is replaced by a recorder, so a refusal
that let the consent through would show up as a published event (and an accepted one, as the
control, shows that the recorder does see what is published).
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from caselink import cli_consent
from caselink.cli import app

SUBJECT = ["consent", "record", "--citizen", "C1", "--by", "test"]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(cli_consent, "_publish", lambda event, topic: sent.append(event))
    return sent


@pytest.mark.parametrize(("flags", "reason"), [
    (["--purpose", "research", "--national-opt-out", "--permit"], "cannot be recorded with --permit"),
    (["--purpose", "*", "--national-opt-out", "--fields", "phones"], "always whole"),
    (["--purpose", "research"], "--permit"),  # no decision at all: not guessed
    (["--purpose", "research", "--permit", "--from", "2026-12-01", "--to", "2026-11-01"], "valid_to is not after"),
    (["--purpose", "marketing", "--deny"], "not in policy"),
])
def test_contradictory_or_missing_flags_are_refused(flags: list[str], reason: str,
                                                    published: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, [*SUBJECT, *flags])
    assert result.exit_code == 1, result.output
    assert reason in result.output
    assert published == []


def test_two_subjects_are_refused(published: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, [*SUBJECT, "--record", "health:H1", "--purpose", "research", "--permit"])
    assert result.exit_code == 1 and "exactly one subject" in result.output
    assert published == []


@pytest.mark.parametrize(("flags", "decision", "opt_out"), [
    (["--purpose", "research", "--permit"], "PERMIT", False),
    (["--purpose", "*", "--deny", "--fields", "phones"], "DENY", False),
    (["--purpose", "*", "--national-opt-out"], "DENY", True),
    (["--purpose", "*", "--national-opt-out", "--deny"], "DENY", True),  # says the same thing twice: fine
])
def test_consistent_flags_are_recorded_as_said(flags: list[str], decision: str, opt_out: bool,
                                               published: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, [*SUBJECT, *flags])
    assert result.exit_code == 0, result.output
    (event,) = published
    assert (event["decision"], event["national_opt_out"]) == (decision, opt_out)
