"""Scoring a record against the candidates blocking found: the part of linking that shards.

The single writer (``CitizenIndex``) and each scoring shard (``linkage.shards``) call the same
function here, so a shard's answer is the single writer's scoring restricted to the candidates the
shard's blocks hold. What the scoring needs is a function of the ordered changes alone (which
records are in which blocks, their values, and the reviewers' must-links), never of how the records
were clustered; that is what lets it run apart from, and ahead of, the one ordered resolver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from caselink.linkage.model import LinkageModel
from caselink.linkage.record import LinkRecord

# (the other record's key, match weight, comparison levels, whether a reviewer said they must link)
ScoredPair = tuple[str, float, list[int], bool]


@dataclass
class Scored:
    """What the scoring shards found for one change, merged: the pairs (each other record once)
    and, for an update, whether the record's values are unchanged (its home shard says; None when
    the record is new)."""

    pairs: list[ScoredPair] = field(default_factory=list)
    unchanged: bool | None = None


def score_pairs(model: LinkageModel, record: LinkRecord, found: Iterable[str],
                record_of: Callable[[str], LinkRecord], must_link: set[tuple[str, str]]) -> list[ScoredPair]:
    """Every found record scoring at least the model's review weight, and every must-link partner
    whatever its score (a reviewer's decision holds; its weight is still reported)."""
    review_w = model.review_weight
    score, score_at_least = model.score, model.score_at_least
    key = record.key
    pairs: list[ScoredPair] = []
    for other_key in found:
        other = record_of(other_key)
        must = bool(must_link) and ((key, other_key) if key < other_key else (other_key, key)) in must_link
        scored = score(record, other) if must else score_at_least(record, other, review_w)
        if scored is not None:
            pairs.append((other_key, scored[0], scored[1], must))
    return pairs
