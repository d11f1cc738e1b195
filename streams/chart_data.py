"""What the worker's /charts pages draw, read from the linker's index (hold ``LinkerLoop.lock``).

The index is the live data: the links that hold each citizen together, the pairs waiting for a
person, every record's person. ``caselink chart live`` draws the same from the topics instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from caselink.streams.linker_core import LinkerCore

COMPLETENESS_SAMPLE = 20_000  # records read for completeness: enough for shares to 1%, cheap at a million
CLUSTER_NODES = 60


def live_weights(core: LinkerCore) -> dict[str, list[float]]:
    """The weights of the links joining records now (each once; a reviewer's "same" has none) and
    of the pairs waiting for a person."""
    links = [w for a, others in core.index.edges.items() for b, w in others.items() if a < b and math.isfinite(w)]
    return {"links joining records": links, "possible matches waiting for a person": list(core.index.review.values())}


def sample_persons(core: LinkerCore, limit: int = COMPLETENESS_SAMPLE) -> list[tuple[str, Mapping[str, Any]]]:
    """(agency, person) of up to ``limit`` records, in the order the index took them."""
    return [(key.partition(":")[0], core.person(key)) for key in itertools.islice(core.members, limit)]


def citizen_graph(core: LinkerCore, citizen_id: str) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """(the live id, nodes, edges) of a citizen: its records, the links among them, and the pairs
    with records outside it that a person decided or is asked about."""
    index = core.index
    live = index.resolve(citizen_id)
    if live is None:
        return None, [], []
    members = index.members(live)[:CLUSTER_NODES]
    inside = set(members)
    edges: list[dict[str, Any]] = []
    outside: list[str] = []
    for a in members:
        for b, weight in index.edges.get(a, {}).items():
            if b in inside and a < b:
                pair = (a, b)
                kind = "same" if pair in index.must_link or math.isinf(weight) else "link"
                edges.append({"a": a, "b": b, "weight": weight if math.isfinite(weight) else 99.0, "kind": kind})
    for kind, pairs in (("different", index.cannot_link), ("review", index.review)):
        for a, b in pairs:
            if (a in inside) != (b in inside):
                other = b if a in inside else a
                if other not in outside and len(inside) + len(outside) < CLUSTER_NODES:
                    outside.append(other)
                weight = index.review.get((a, b), 0.0) if kind == "review" else 0.0
                edges.append({"a": a, "b": b, "weight": weight, "kind": kind})
    nodes = []
    for key in [*members, *outside]:
        person = core.person(key)
        name = " ".join(x for x in (person.get("given_names"), person.get("family_name")) if x) or "(no name)"
        born = person.get("date_of_birth") or "?"
        nodes.append({"key": key, "agency": key.partition(":")[0],
                      "label": f"{name}, born {born}" + ("" if key in inside else " (another person)")})
    return live, nodes, edges
