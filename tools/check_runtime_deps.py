"""Runtime dependencies are what the runtime imports: compare the installed caselink's imports
with the distribution's requirements (extras aside).

Run with the Python of an environment where caselink's wheel is installed (the wheel test runs it
in a fresh one; an editable install lists no module files). Fails, naming them, on an imported
package that is not a requirement, and on a requirement nothing imports unless INDIRECT gives
the reason it is needed.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys

# Requirements no caselink module imports by name, and why they are runtime requirements all the same.
INDIRECT = {
    "cramjam": "aiokafka (under Faust) needs it to read lz4-compressed batches",
    "python-stdnum": "linkage.schemes loads a scheme's validator by name (check_digit: stdnum.nl.bsn)",
    "pyarrow": "pandas writes Parquet with it (caselink export --out x.parquet)",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_distributions() -> dict[str, set[str]]:
    """Distribution -> the caselink modules importing it."""
    by_module = metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    files = [f for f in metadata.files("caselink") or [] if f.parts[0] == "caselink" and f.suffix == ".py"]
    if not files:
        raise SystemExit("no module files recorded for caselink: install its wheel (not editable) first")
    for file in files:
        module = ".".join(file.with_suffix("").parts)
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "caselink":
                    continue
                for dist in by_module.get(top, [top]):
                    found.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    return found


def main() -> int:
    required = {_name(r) for r in metadata.requires("caselink") or [] if "extra ==" not in r}
    imported = imported_distributions()
    undeclared = {d: sorted(m) for d, m in imported.items() if d not in required}
    unused = sorted(required - set(imported) - set(INDIRECT))
    for dist, modules in sorted(undeclared.items()):
        print(f"imported but not a runtime requirement: {dist} (by {', '.join(modules)})")
    for dist in unused:
        print(f"a runtime requirement nothing imports: {dist} (benchmark-only? move it to the bench extra)")
    if undeclared or unused:
        return 1
    print(f"runtime requirements match the imports: {len(required)} requirements "
          f"({len(INDIRECT)} needed indirectly: {', '.join(sorted(INDIRECT))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
