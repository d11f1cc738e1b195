"""Lay the ``caselink`` package out as it installs, for tools that read a package from disk.

setup.py maps the repository's top-level folders (``linkage/``, ``streams/`` ...) to
``caselink.linkage``, ``caselink.streams`` ...; an editable install serves that mapping through an
import hook, which import-linter (grimp) and mypy do not follow. This builds ``<dest>/caselink/``
out of symbolic links to the repository's files (rebuilt each run, so it never goes stale) and
can run a tool on it:

    python tools/package_tree.py build/package-tree                 # only lay it out
    python tools/package_tree.py build/package-tree -- lint-imports $PWD/pyproject.toml
    python tools/package_tree.py build/package-tree -- mypy --config-file $PWD/pyproject.toml caselink

A tool runs in the tree's folder (import-linter looks for the root package there first), with the
tree on PYTHONPATH; file paths in its output are written as the repository's files.

The mapping is read from setup.py's ``ROOTS``, the one place it is kept.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"__pycache__"}


def roots() -> dict[str, str]:
    """setup.py's ROOTS: import package -> folder in the repository."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ROOTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    raise SystemExit("setup.py has no ROOTS mapping")


def lay_out(dest: Path) -> dict[Path, Path]:
    """Build the tree; returns each link's path -> the repository file it points at."""
    if dest.exists():
        shutil.rmtree(dest)
    links: dict[Path, Path] = {}
    for package, folder in sorted(roots().items()):
        target_dir = dest.joinpath(*package.split("."))
        for source in sorted((REPO / folder).rglob("*.py")):
            relative = source.relative_to(REPO / folder)
            if SKIP_DIRS & set(relative.parts):
                continue
            link = target_dir / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
            links[link] = source
    return links


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    dest = Path(argv[0]).resolve()
    links = lay_out(dest)
    command = argv[2:] if len(argv) > 1 and argv[1] == "--" else []
    if not command:
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(dest), os.environ.get("PYTHONPATH")]))}
    tool = shutil.which(command[0], path=str(Path(sys.executable).parent)) or command[0]
    result = subprocess.run([tool, *command[1:]], cwd=dest, env=env, capture_output=True, text=True)
    # A link's path in the tool's output is written as the repository file it stands for.
    by_text = {str(link.relative_to(dest)): str(src.relative_to(REPO)) for link, src in links.items()}
    by_text.update({str(link): str(src.relative_to(REPO)) for link, src in links.items()})
    pattern = re.compile("|".join(re.escape(k) for k in sorted(by_text, key=len, reverse=True))) if by_text else None
    for stream, text in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
        stream.write(pattern.sub(lambda m: by_text[m.group(0)], text) if pattern else text)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
