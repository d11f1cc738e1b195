"""Accuracy against ground truth: pairwise and cluster precision, recall and F1."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from itertools import combinations


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    true_positives: int
    predicted: int
    actual: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def scores(predicted: set[tuple[str, str]], actual: set[tuple[str, str]]) -> Scores:
    tp = len(predicted & actual)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(actual) if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp, len(predicted), len(actual))


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def cluster_pairs(assignment: Mapping[str, str], restrict: Iterable[str] | None = None) -> set[tuple[str, str]]:
    """All record pairs that share a cluster (optionally only among ``restrict``)."""
    groups: dict[str, list[str]] = defaultdict(list)
    keep = set(restrict) if restrict is not None else None
    for record, cluster in assignment.items():
        if keep is None or record in keep:
            groups[cluster].append(record)
    pairs: set[tuple[str, str]] = set()
    for members in groups.values():
        for a, b in combinations(sorted(members), 2):
            pairs.add((a, b))
    return pairs


def pairwise_scores(predicted: Mapping[str, str], truth: Mapping[str, str]) -> Scores:
    """Cluster-implied pairwise scores over the records present in both mappings."""
    common = set(predicted) & set(truth)
    return scores(cluster_pairs(predicted, common), cluster_pairs(truth, common))


def cross_pairs(assignment: Mapping[str, str], left: set[str], right: set[str]) -> set[tuple[str, str]]:
    """Pairs (l, r) with l from ``left`` and r from ``right`` in one cluster (linking two datasets)."""
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for record, cluster in assignment.items():
        if record in left:
            groups[cluster][0].append(record)
        elif record in right:
            groups[cluster][1].append(record)
    return {(a, b) for ls, rs in groups.values() for a in ls for b in rs}


def cluster_scores(predicted: Mapping[str, str], truth: Mapping[str, str]) -> Scores:
    """Exact cluster match: a predicted cluster counts only if it equals a true cluster."""
    def clusters(assignment: Mapping[str, str]) -> set[frozenset[str]]:
        groups: dict[str, set[str]] = defaultdict(set)
        for record, cluster in assignment.items():
            groups[cluster].add(record)
        return {frozenset(g) for g in groups.values()}

    common = set(predicted) & set(truth)
    p = clusters({k: v for k, v in predicted.items() if k in common})
    t = clusters({k: v for k, v in truth.items() if k in common})
    tp = len(p & t)
    precision = tp / len(p) if p else 1.0
    recall = tp / len(t) if t else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp, len(p), len(t))
