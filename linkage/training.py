"""Unsupervised training of the Fellegi-Sunter model, the way Splink does it.

* u (how often non-matches agree at each level) comes from random record pairs, which are almost
  all non-matches.
* m (how often matches agree) comes from expectation-maximisation with u held fixed, run in
  *sessions* over pairs that share one strong property, with the comparisons that property
  decides (or that correlate with it) switched off: pairs born on the same date train names and
  identifiers; pairs with the same given and family name train date of birth and location.
  Switching the blocked fields off is what keeps EM from learning "same household" or "same
  birthday" instead of "same person".
* The prior (the chance two random records match) follows from Bayes' rule in the date session:
  P(match) = P(match | same date) * P(same date) / P(same date | match).
* Term frequencies of given and family names come from the training records.

The EM works on distinct comparison patterns with counts, so it costs milliseconds per iteration.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations

import numpy as np
from caselink.linkage.comparisons import DEFAULT_COMPARISONS, MISSING, Comparison
from caselink.linkage.model import ComparisonParams, LinkageModel
from caselink.linkage.record import LinkRecord


def comparison_matrix(
    pairs: Sequence[tuple[LinkRecord, LinkRecord]], comparisons: Sequence[Comparison]
) -> np.ndarray:
    out = np.empty((len(pairs), len(comparisons)), dtype=np.int8)
    for i, (a, b) in enumerate(pairs):
        for j, comparison in enumerate(comparisons):
            out[i, j] = comparison.compare(a, b)
    return out


def estimate_u(
    records: Sequence[LinkRecord],
    comparisons: Sequence[Comparison] = DEFAULT_COMPARISONS,
    n_pairs: int = 300_000,
    seed: int = 42,
) -> list[np.ndarray]:
    """u per level from random pairs, with add-one smoothing so no level has u = 0."""
    rng = random.Random(seed)
    n = len(records)
    if n < 2:
        raise ValueError("need at least two records to estimate u")
    pairs = []
    for _ in range(n_pairs):
        i, j = rng.randrange(n), rng.randrange(n)
        if i != j:
            pairs.append((records[i], records[j]))
    matrix = comparison_matrix(pairs, comparisons)
    u = []
    for j, comparison in enumerate(comparisons):
        column = matrix[:, j]
        counts = np.bincount(column[column != MISSING], minlength=comparison.n_levels).astype(float)
        u.append((counts + 1.0) / (counts.sum() + comparison.n_levels))
    return u


def term_frequencies(records: Sequence[LinkRecord], field: str, min_count: int = 2) -> dict[str, float]:
    """Relative frequency of each value seen at least ``min_count`` times (rarer ones use the floor)."""
    counts = Counter(v for v in (getattr(r, field) for r in records) if v)
    total = sum(counts.values())
    return {value: count / total for value, count in counts.items() if count >= min_count}


def pairs_sharing(
    records: Sequence[LinkRecord],
    key: Callable[[LinkRecord], Hashable | None],
    max_pairs: int = 2_000_000,
    max_group: int = 400,
    seed: int = 42,
) -> list[tuple[LinkRecord, LinkRecord]]:
    """All pairs of records with the same ``key`` (groups larger than ``max_group`` are sampled)."""
    groups: dict[Hashable, list[LinkRecord]] = defaultdict(list)
    for r in records:
        k = key(r)
        if k is not None:
            groups[k].append(r)
    rng = random.Random(seed)
    pairs: list[tuple[LinkRecord, LinkRecord]] = []
    for members in groups.values():
        if len(members) > max_group:
            members = rng.sample(members, max_group)
        pairs.extend(combinations(members, 2))
    if len(pairs) > max_pairs:
        pairs = rng.sample(pairs, max_pairs)
    return pairs


@dataclass
class Session:
    name: str
    key: Callable[[LinkRecord], Hashable | None]
    switched_off: frozenset[str]  # comparisons this session's key decides


def _same_dob(r: LinkRecord) -> Hashable | None:
    return r.dob.digits if r.dob else None


def _same_name(r: LinkRecord) -> Hashable | None:
    return (r.given_canon, r.family) if r.given_canon and r.family else None


SESSIONS = (
    # Same birthday and same home is a twin as often as a duplicate: location trains elsewhere.
    Session("same_date_of_birth", _same_dob, frozenset({"date_of_birth", "location", "postcode", "address",
                                                        "locality"})),
    Session("same_name", _same_name, frozenset({"given_name", "family_name"})),
)


def _initial_m(n_levels: int) -> np.ndarray:
    """A starting guess that matches mostly agree: mass falling off across the levels."""
    m = np.array([0.5**i for i in range(n_levels)], dtype=float)
    m[-1] = 0.05
    return m / m.sum()


def expectation_maximisation(
    matrix: np.ndarray,
    u: list[np.ndarray],
    comparisons: Sequence[Comparison],
    active: Sequence[bool],
    max_iterations: int = 200,
    tolerance: float = 1e-5,
    prior: float = 0.1,
) -> tuple[list[np.ndarray], float, int]:
    """m per level and P(match) among these pairs, u fixed; inactive comparisons are ignored."""
    patterns, counts = np.unique(matrix, axis=0, return_counts=True)
    counts = counts.astype(float)
    m = [_initial_m(c.n_levels) for c in comparisons]
    log_u = [np.log(x) for x in u]
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported to the caller
        lr = np.zeros(len(patterns))
        for j in range(len(comparisons)):
            if not active[j]:
                continue
            col = patterns[:, j]
            present = col != MISSING
            lr[present] += np.log(m[j][col[present]]) - log_u[j][col[present]]
        log_odds = np.log(prior) - np.log1p(-prior) + lr
        posterior = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -700, 700)))
        weighted = posterior * counts
        new_prior = min(max(float(weighted.sum() / counts.sum()), 1e-9), 1 - 1e-9)
        new_m = []
        for j, comparison in enumerate(comparisons):
            col = patterns[:, j]
            present = col != MISSING
            mass = np.bincount(col[present], weights=weighted[present], minlength=comparison.n_levels)
            # Half a pair of pseudo-count per level: a level no training match showed is rare,
            # not impossible, so it must not veto a link on its own.
            mass = mass + 0.5
            new_m.append(mass / mass.sum())
        change = max(abs(new_prior - prior), *(float(np.max(np.abs(a - b))) for a, b in zip(new_m, m, strict=True)))
        m, prior = new_m, new_prior
        if change < tolerance:
            break
    return m, prior, iterations


def train_model(
    records: Sequence[LinkRecord],
    version: str | None = None,
    comparisons: Sequence[Comparison] = DEFAULT_COMPARISONS,
    u_pairs: int = 300_000,
    link_threshold: float = 0.90,
    review_threshold: float = 0.5,
    max_training_records: int = 300_000,
    seed: int = 42,
) -> LinkageModel:
    """Train u, m, the prior and name term frequencies on ``records`` (no labels needed)."""
    if len(records) > max_training_records:
        records = random.Random(seed).sample(list(records), max_training_records)
    u = estimate_u(records, comparisons, n_pairs=u_pairs, seed=seed)
    names = [c.name for c in comparisons]
    estimates: dict[str, list[np.ndarray]] = defaultdict(list)
    session_info = {}
    prior = None
    for session in SESSIONS:
        pairs = pairs_sharing(records, session.key, seed=seed)
        if len(pairs) < 10:
            session_info[session.name] = {"pairs": len(pairs), "skipped": True}
            continue
        active = [name not in session.switched_off for name in names]
        matrix = comparison_matrix(pairs, comparisons)
        m, session_prior, iterations = expectation_maximisation(matrix, u, comparisons, active)
        for name, on, mm in zip(names, active, m, strict=True):
            if on:
                estimates[name].append(mm)
        session_info[session.name] = {"pairs": len(pairs), "p_match": session_prior, "iterations": iterations}
        if session.name == "same_date_of_birth":
            prior_from_dob = session_prior
    missing = [n for n in names if not estimates[n]]
    if missing:
        raise ValueError(f"too little data to train m for {', '.join(missing)}")
    m_final = {name: np.mean(estimates[name], axis=0) for name in names}
    if "date_of_birth" in names and "same_date_of_birth" in session_info and "p_match" in session_info[
        "same_date_of_birth"
    ]:
        dob = names.index("date_of_birth")
        prior = prior_from_dob * u[dob][0] / m_final["date_of_birth"][0]
    if prior is None:
        prior = 1.0 / max(len(records), 2)
    prior = min(max(prior, 1e-12), 0.5)
    tf = {c.name: term_frequencies(records, c.tf_field) for c in comparisons if c.tf_field}
    return LinkageModel(
        version=version or datetime.now(UTC).strftime("m%Y%m%d%H%M%S"),
        comparisons=[
            ComparisonParams(c.name, list(c.levels), [float(x) for x in m_final[c.name]], [float(x) for x in uu])
            for c, uu in zip(comparisons, u, strict=True)
        ],
        prior=prior,
        link_threshold=link_threshold,
        review_threshold=review_threshold,
        tf=tf,
        tf_minimum=1.0 / max(len(records), 1),
        metadata={
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": len(records),
            "u_pairs": u_pairs,
            "sessions": session_info,
        },
    )
