"""The policy language: the bundled policy loads; every kind of mistake is named with its line."""

import pytest
from caselink.streams.consent.policy import PolicyError, load_policy, parse_policy

from tests.consent_fixtures import policy

GOOD = """\
version: "1"
purposes:
  research:
    legal_basis: consent
    consent: required
    national_opt_out: true
    agencies: [health]
    fields: [year_of_birth, cases]
    pseudonymise: true
"""


def test_bundled_policy_has_the_four_purposes() -> None:
    p = policy()
    assert set(p.purposes) == {"direct_care", "safeguarding", "research", "planning"}
    assert p.purposes["safeguarding"].statutory_override
    assert p.purposes["research"].pseudonymise and p.purposes["research"].consent == "required"


def test_fingerprint_changes_with_content_even_if_version_does_not() -> None:
    a = parse_policy(GOOD)
    b = parse_policy(GOOD.replace("[health]", "[health, police]"))
    assert a.version == b.version and a.label != b.label


@pytest.mark.parametrize(("text", "line", "words"), [
    (GOOD.replace("consent: required", "consent: maybe"), 5, "consent"),
    (GOOD.replace("[year_of_birth, cases]", "[year_of_birth, shoe_size]"), 8, "shoe_size"),
    (GOOD.replace("[year_of_birth, cases]", "[family_name, cases]"), 3, "direct identifiers"),
    (GOOD.replace("    pseudonymise: true\n", "    pseudonymise: true\n    colour: red\n"), 10, "colour"),
    (GOOD.replace("agencies: [health]", "agencies: []"), 7, "agencies"),
    (GOOD.replace("    legal_basis: consent\n", ""), 3, "legal_basis"),
    (GOOD.replace("research:", "Research:"), 2, "lower-case"),
    (GOOD.replace("national_opt_out: true", "national_opt_out: true\n    statutory_override: true"), 3,
     "cannot also override"),
    ("version: 1\npurposes: [a, b\n", 3, "not valid YAML"),
])
def test_errors_name_file_line_and_problem(text: str, line: int, words: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "policy.yaml")
    message = str(err.value)
    assert f"policy.yaml:{line}:" in message, message
    assert words in message


def test_missing_file_is_a_policy_error(tmp_path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")


def test_policy_check_command_exit_codes(tmp_path) -> None:
    from typer.testing import CliRunner

    from caselink.cli import app

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("consent: required", "consent: maybe"))
    runner = CliRunner()
    ok = runner.invoke(app, ["policy", "check", str(good), "--json"])
    assert ok.exit_code == 0 and '"valid": true' in ok.output
    wrong = runner.invoke(app, ["policy", "check", str(bad)])
    assert wrong.exit_code == 1 and f"{bad}:5:" in wrong.output.replace("\n", "")
