"""YAML loading that remembers line numbers, so configuration errors can say where they are.

Used by the mapping language (``connectors.mapping``) and the consent policy
(``streams.consent.policy``): a person fixing a file needs ``file:line: what is wrong``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class LineLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings are ``LineDict``s."""


class LineDict(dict):
    line: int = 0
    key_lines: dict[str, int]


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
    return mapping


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def line_of(node: Any, key: str | None = None) -> int:
    """The line of ``node[key]`` (or of ``node``), 0 when unknown."""
    if isinstance(node, LineDict):
        if key is not None and key in getattr(node, "key_lines", {}):
            return node.key_lines[key]
        return node.line
    return 0


def line_of_path(root: Any, path: tuple[Any, ...]) -> int:
    """The line of the deepest part of ``path`` (a pydantic error ``loc``) that exists in ``root``."""
    node, line = root, line_of(root)
    for part in path:
        if isinstance(node, dict) and part in node:
            line = line_of(node, part) or line
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            line = line_of(node) or line
        else:
            break
    return line


def load_yaml_with_lines(text: str, file: str | Path, error: Callable[[str], Exception]) -> Any:
    """Parse ``text``; a syntax error becomes ``error("file:line: ...")``."""
    try:
        return yaml.load(text, Loader=LineLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "?"
        raise error(f"{file}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
