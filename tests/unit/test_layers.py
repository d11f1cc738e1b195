"""The layer contract (pyproject.toml, ``tool.importlinter``): kept by the code, broken by an upward import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools import package_tree

REPO = Path(__file__).resolve().parents[2]


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    lint_imports = str(Path(sys.executable).parent / "lint-imports")
    return subprocess.run([lint_imports, "--no-cache", str(REPO / "pyproject.toml")], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    package_tree.lay_out(tmp_path)
    (tmp_path / "caselink" / "core" / "planted.py").write_text("from caselink.streams import metrics\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "caselink.core.planted -> caselink.streams.metrics" in result.stdout, result.stdout


def test_a_module_outside_the_layers_breaks_the_contract(tmp_path: Path) -> None:
    """Exhaustive: a new module of the CLI package must be given its place in the diagram."""
    package_tree.lay_out(tmp_path)
    (tmp_path / "caselink" / "unplaced.py").write_text("")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "caselink.unplaced" in result.stdout, result.stdout
