"""Issue 19's friction items that need no broker: each runs the real `caselink` command and checks
the exit code and the message a person would read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from caselink.output import plain_table

CASELINK = [sys.executable, "-m", "caselink.cli"]


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The command as a person runs it, its output piped (so not a terminal)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CASELINK_")}
    environment.update({"CASELINK_LINKAGE__BUNDLED_MODEL": "true", **env})
    return subprocess.run([*CASELINK, *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=120)


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("worker:\n  web_prot: 7000\n",
     "caselink.yaml:2: worker.web_prot is not a setting; worker takes: app_id, batch_size"),
    ("web:\n  tls_cert: x.pem\n", "caselink.yaml:2: web.tls_cert is not a setting; web takes: session_ttl_s"),
    ("kafka: {}\nkafak:\n  bootstrap_servers: x\n",
     "caselink.yaml:2: kafak is not a setting; the top level takes: agencies, connector"),
    ("kafka:\n  bootstrap_servers: x:9092\n  sasl_password: hunter2\n",
     "caselink.yaml:3: kafka.sasl_password is a secret and is refused in a file; set CASELINK_KAFKA__SASL_PASSWORD"),
    ("kafka:\n  default_partitions: 0\n", "caselink.yaml:2: kafka.default_partitions: Input should be greater"),
])
def test_a_wrong_setting_is_one_line_naming_the_file_and_line(tmp_path: Path, yaml_text: str, expected: str) -> None:
    (tmp_path / "caselink.yaml").write_text(yaml_text)
    result = run("topics", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: configuration: {expected}"), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stderr


def test_a_wrong_setting_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    result = run("topics", "list", cwd=tmp_path, CASELINK_WORKER__WEB_PROT="7000")
    assert result.returncode == 2
    assert "CASELINK_WORKER__WEB_PROT (environment): worker.web_prot is not a setting" in result.stderr


def test_version_and_help_show_the_configured_ports(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"caselink {version('caselink')}"
    (tmp_path / "caselink.yaml").write_text("worker:\n  web_port: 7123\nconsent:\n  web_port: 7124\n"
                                            "shards:\n  web_port: 7125\n")
    for command, text in ((["worker"], "worker.web_port, now 7123"), (["gate"], "consent.web_port, now 7124"),
                          (["shard"], "shards.web_port, now 7125"), (["ingest", "serve"], "ingest.port, now 9181")):
        result = run(*command, "--help", cwd=tmp_path, CASELINK_INGEST__PORT="9181", COLUMNS="200")
        assert result.returncode == 0 and text in result.stdout, result.stdout


def test_a_shard_of_an_unknown_tier_is_refused_before_anything_starts() -> None:
    result = run("shard", "scorers")
    assert result.returncode == 2 and "'scorers': expected blocks or records" in result.stderr, result.stderr


def test_piped_tables_are_plain_aligned_lines_never_wrapped() -> None:
    result = run("policy", "check", COLUMNS="80")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("purpose "))
    rows = lines[header + 1:]
    assert {r.split()[0] for r in rows} == {"direct_care", "safeguarding", "research", "planning"}
    assert max(len(line) for line in lines) > 80  # a whole row per line, however wide
    assert not any(ch in result.stdout for ch in "│┃━─\x1b")  # no box drawing, no colour codes
    # the columns line up: every row's second column starts where the header's does
    start = lines[header].index("legal basis")
    assert all(r[start - 2:start] == "  " and r[start] != " " for r in rows)


def test_plain_table_aligns_and_keeps_each_row_on_one_line() -> None:
    text = plain_table(("group", "lag"), [("caselink-linker", 0), ("a\nb", 12345)], frozenset({"lag"}))
    assert text.splitlines() == ["group              lag", "caselink-linker      0", "a b              12345"]


def test_replay_offsets_that_are_not_numbers_say_what_is_expected() -> None:
    result = run("replay", "agency.health.person-events", "--offsets", "0:5,1:x", "--to", "sandbox")
    assert result.returncode == 2
    assert "error: --offsets: '1:x' is not partition@offset (two whole numbers, e.g. 0@1200,2@998)" in result.stderr


def test_replay_says_where_from_and_where_to() -> None:
    result = run("replay", "agency.health.person-events", "--dry-run")
    assert result.returncode == 2 and "say where to start: --from" in result.stderr
    result = run("replay", "agency.health.person-events", "--from", "6h")
    assert result.returncode == 2 and "say where to: --to" in result.stderr and "--in-place" in result.stderr


def test_review_decide_needs_a_verdict_and_names_both_flags() -> None:
    result = run("review", "decide", "health:H1", "police:P1", "--by", "x")
    assert result.returncode == 2
    assert "--same" in result.stderr and "--different" in result.stderr


def test_review_decide_refuses_a_record_key_of_no_agency() -> None:
    result = run("review", "decide", "nosuch:1", "police:P1", "--different", "--by", "x")
    assert result.returncode == 2
    assert "nosuch:1: no agency 'nosuch'" in result.stderr
