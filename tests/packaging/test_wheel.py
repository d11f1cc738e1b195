"""The sdist and wheel as a user gets them: built without a warning, installed alone into a fresh
virtualenv, every module imports, and the command runs (--help, --version, policy check).

Slow (a build and an install of every runtime dependency, from pip's cache when it has them), so
`make unit` leaves it out and `make test` runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# What "a warning" means in a build log: setuptools' and Python's warnings, and pip's.
WARNING = re.compile(r"warning|deprecat", re.IGNORECASE)

IMPORT_EVERY_MODULE = """
import importlib, importlib.metadata as md
names = sorted(".".join(f.with_suffix("").parts) for f in md.files("caselink")
               if f.parts[0] == "caselink" and f.suffix == ".py")
names = [n.removesuffix(".__init__") for n in names]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def _run(*args: str | Path, cwd: Path = REPO) -> str:
    # Without PYTHONDONTWRITEBYTECODE (set in some shells and CI images), as on a user's machine:
    # with it, setuptools reports "byte-compiling is disabled" as a warning of the build.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The sdist, and the wheel built from it (python -m build), with the build's log."""
    out = tmp_path_factory.mktemp("dist")
    log = _run(sys.executable, "-m", "build", "--outdir", out, REPO)
    return out, log


@pytest.fixture(scope="module")
def installed(built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel and its runtime requirements, nothing else."""
    out, _ = built
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env)
    wheel = next(out.glob("caselink-*.whl"))
    _run(env / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    return env


def test_the_build_gives_an_sdist_and_a_wheel_without_a_warning(built: tuple[Path, str]) -> None:
    out, log = built
    assert len(list(out.glob("caselink-*.tar.gz"))) == 1
    wheel = next(out.glob("caselink-*.whl"))
    print(f"wheel: {wheel.name}, {wheel.stat().st_size:,} bytes")
    warnings = [line for line in log.splitlines() if WARNING.search(line)]
    assert not warnings, "\n".join(warnings)


def test_every_module_imports_from_the_installed_wheel(installed: Path) -> None:
    count = int(_run(installed / "bin" / "python", "-c", IMPORT_EVERY_MODULE, cwd=installed).strip().splitlines()[-1])
    print(f"{count} modules imported from the installed wheel")
    assert count > 90


def test_the_command_runs_from_the_installed_wheel(installed: Path) -> None:
    caselink = installed / "bin" / "caselink"
    assert "Usage: caselink" in _run(caselink, "--help", cwd=installed)
    from importlib.metadata import version

    assert _run(caselink, "--version", cwd=installed).strip() == f"caselink {version('caselink')}"
    assert "policy" in _run(caselink, "policy", "check", cwd=installed)  # exits 0: the bundled policy is valid


def test_runtime_requirements_are_what_the_runtime_imports(installed: Path) -> None:
    _run(installed / "bin" / "python", REPO / "tools" / "check_runtime_deps.py", cwd=installed)
