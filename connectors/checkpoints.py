"""Connector checkpoints: where each connector got to in its source, kept per agency.

Each agency's connectors write to their own compacted topic (``connector_checkpoints_topic``),
one key per connector name. Why per agency: with one shared topic, any connector login could
write any key, so one agency could forge another's position (skipping its rows) or write one
value that was not JSON and make every connector crash at start, for good (the topic is
compacted). A topic per agency lets the broker's ACLs (``infra/acls.py``) give each agency's
connector principal its own topic only.

Reading never stops on a bad value: a value that is not a checkpoint (not JSON, the wrong shape,
a position that is not a number) is skipped and reported, and the connector's previous valid
checkpoint still in the log is used, or none (then the file is read from its start and the
linker absorbs the rows sent again by their event id and version).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from caselink.infra.topics import connector_checkpoints_topic
from prometheus_client import Counter

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings

log = logging.getLogger(__name__)
DAMAGED = Counter("caselink_connector_checkpoints_damaged_total", "checkpoint values skipped as unreadable",
                  ["agency"])


@dataclass(frozen=True)
class Damaged:
    """A checkpoint value that was skipped, and why."""

    topic: str
    offset: int
    key: str | None
    reason: str


def checkpoint_problem(value: Any) -> str | None:
    """Why ``value`` (a decoded checkpoint) is not one a connector wrote, or None."""
    if not isinstance(value, dict):
        return "not a JSON object"
    files = value.get("files", {})
    if not isinstance(files, dict):
        return "files is not an object"
    for name, state in files.items():
        if not isinstance(state, dict):
            return f"files[{name!r}] is not an object"
        for field in ("rows", "size", "mtime_ns"):
            number = state.get(field)
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                return f"files[{name!r}].{field} is not a whole number"
    return None


def read_checkpoints(settings: Settings, agency: str, timeout: float = 30.0,
                     damaged: list[Damaged] | None = None) -> dict[str, dict[str, Any]]:
    """Every checkpoint of ``agency``'s connectors, by connector name: the last valid value of each
    key (a tombstone reads as an empty checkpoint). Values that are not checkpoints are skipped,
    logged, counted, and appended to ``damaged`` when given."""
    topic = connector_checkpoints_topic(agency)
    found: dict[str, dict[str, Any]] = {}
    for msg in read_to_end(settings, [topic], timeout=timeout):
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        if msg.value() is None:
            if key is not None:
                found[key] = {}
            continue
        try:
            value = json.loads(msg.value())
            problem = checkpoint_problem(value) if key is not None else "no key"
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
            problem = f"not JSON ({type(exc).__name__})"
        if problem is not None:
            log.warning("connector checkpoint %s@%d (key %r) skipped: %s", topic, msg.offset(), key, problem)
            DAMAGED.labels(agency).inc()
            if damaged is not None:
                damaged.append(Damaged(topic, msg.offset(), key, problem))
            continue
        found[key] = value  # type: ignore[index]
    return found


def load_checkpoint(settings: Settings, agency: str, name: str, timeout: float = 30.0) -> dict[str, Any] | None:
    """The last valid checkpoint connector ``name`` of ``agency`` committed."""
    return read_checkpoints(settings, agency, timeout).get(name) or None
