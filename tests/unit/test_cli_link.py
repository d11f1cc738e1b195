"""`caselink link` on the bundled extracts, through their mapping files (no broker needed)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from caselink.demo import SAMPLES


def test_link_command_writes_clusters_pairs_and_rejections(tmp_path: Path) -> None:
    mappings = [str(SAMPLES / "mappings" / f"{a}.yaml") for a in ("health", "social_care", "police")]
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "caselink.cli", "link", *mappings, "--out", str(out),
                           "--use-default-model", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    clusters = pd.read_csv(out / "clusters.csv")
    # Two rows with one bad field each (an impossible date, a sex code outside the map) are linked
    # on the rest; only the row without a record id is refused.
    assert summary["records"] == len(clusters) == 246
    assert {"health:HEBAD01", "social_care:SCBAD01"} <= set(clusters.record_key)
    assert summary["citizens"] == clusters.citizen_id.nunique() < 246
    rejected = pd.read_csv(out / "rejected.csv")
    assert set(rejected.record_key) == {"health_patients.csv:row 162"}
    pairs = pd.read_csv(out / "pairs.csv")
    linked = pairs[pairs.linked]
    same = dict(zip(clusters.record_key, clusters.citizen_id, strict=True))
    assert all(same[a] == same[b] for a, b in zip(linked.left, linked.right, strict=True))


def test_link_command_reports_a_broken_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agency: health\nrecord_id: id\nfields:\n  shoe_size: x\n")
    done = subprocess.run([sys.executable, "-m", "caselink.cli", "link", str(bad), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "bad.yaml:4" in done.stderr and "shoe_size" in done.stderr
