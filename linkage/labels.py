"""How a deployment's linking is doing, from what people have said about pairs of records.

Reviewers' verdicts (``ReviewDecision``) and a labelled file are the deployment's own ground
truth. Reviewed pairs are not a random sample: the review page shows pairs near the threshold, so
what they measure is the model where it is least sure (how many true matches it leaves to a person,
how often a pair at a given probability is one person). A labelled file of records and the person
each belongs to (a clerical sample, a data set with known answers) measures everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LabelledPair:
    left: str
    right: str
    same: bool
    probability: float | None = None  # the model's match probability when a person saw the pair


@dataclass(frozen=True)
class PairCounts:
    """Labelled pairs against the current citizens: linked (same citizen) or not, same person or not."""

    linked_same: int
    linked_different: int
    apart_same: int
    apart_different: int
    unknown: int  # a record of the pair is not in the index

    @property
    def precision(self) -> float | None:
        linked = self.linked_same + self.linked_different
        return self.linked_same / linked if linked else None

    @property
    def recall(self) -> float | None:
        same = self.linked_same + self.apart_same
        return self.linked_same / same if same else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall}


def count_pairs(pairs: Iterable[LabelledPair], assignment: Mapping[str, str]) -> PairCounts:
    counts = {"linked_same": 0, "linked_different": 0, "apart_same": 0, "apart_different": 0, "unknown": 0}
    for p in pairs:
        a, b = assignment.get(p.left), assignment.get(p.right)
        if a is None or b is None:
            counts["unknown"] += 1
            continue
        together = a == b
        counts[f"{'linked' if together else 'apart'}_{'same' if p.same else 'different'}"] += 1
    return PairCounts(**counts)


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    pairs: int
    same: int

    @property
    def same_share(self) -> float | None:
        return self.same / self.pairs if self.pairs else None


def calibration(pairs: Iterable[LabelledPair], edges: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
                ) -> list[Band]:
    """How often pairs the model scored in each probability band were one person."""
    counts = [[0, 0] for _ in edges[:-1]]
    for p in pairs:
        if p.probability is None:
            continue
        for i in range(len(edges) - 1):
            if edges[i] <= p.probability < edges[i + 1] or (i == len(edges) - 2 and p.probability == edges[-1]):
                counts[i][0] += 1
                counts[i][1] += int(p.same)
                break
    return [Band(edges[i], edges[i + 1], n, s) for i, (n, s) in enumerate(counts)]


def pairs_from_truth(truth: Mapping[str, str]) -> list[LabelledPair]:
    """Every pair of records of one person, as labelled pairs (for a labelled file of clusters,
    ``linkage.evaluate.pairwise_scores`` is the full measure; this is for mixing with reviews)."""
    by_person: dict[str, list[str]] = {}
    for record, person in truth.items():
        by_person.setdefault(person, []).append(record)
    out = []
    for records in by_person.values():
        records.sort()
        out += [LabelledPair(a, b, True) for i, a in enumerate(records) for b in records[i + 1:]]
    return out
