"""The example alert rules parse and only use metrics caselink really exports."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def exported_metrics() -> set[str]:
    names = set()
    for path in [*ROOT.glob("streams/**/*.py"), *ROOT.glob("connectors/*.py")]:
        names |= set(re.findall(r'(?:Counter|Gauge|Histogram)\(\s*"(caselink_[a-z_]+)"', path.read_text()))
    return names


def test_alert_rules_reference_existing_metrics() -> None:
    rules = yaml.safe_load((ROOT / "infra" / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert all(r.get("alert") and r.get("annotations", {}).get("summary") for g in rules["groups"] for r in g["rules"])
    exported = exported_metrics()
    used = {re.sub(r"_(bucket|total|count|sum)$", "", m) if m.endswith("_bucket") else m
            for e in exprs for m in re.findall(r"caselink_[a-z_]+", e)}
    base = {n.removesuffix("_total") for n in exported} | exported
    missing = {m for m in used if m not in base and m.removesuffix("_total") not in base}
    assert not missing, f"alert rules use metrics nobody exports: {missing}"
    assert "caselink_gate_policy_ok" in exported and "caselink_linker_lag" in exported
