"""Unsupervised training of the Fellegi-Sunter model, the way Splink does it.

* u (how often non-matches agree at each level) comes from random record pairs, which are almost
  all non-matches.
* m (how often matches agree) comes from expectation-maximisation with u held fixed, run in
  *sessions* over pairs that share one strong property, with the comparisons that property
  decides (or that correlate with it) switched off: pairs born on the same date train names and
  identifiers; pairs with the same given and family name train the date of birth; pairs with the
  same given name and date of birth train the family name and location. Switching the blocked
  fields off, and location wherever a household shares what is blocked on (twins share a
  birthday, a grandson his grandfather's name), is what keeps EM from learning "same household"
  or "same birthday" instead of "same person".
* The prior (the chance two random records match) follows from Bayes' rule in the date session:
  P(match) = P(match | same date) * P(same date) / P(same date | match).
* Term frequencies of given and family names come from the training records.

The EM works on distinct comparison patterns with counts, so it costs milliseconds per iteration.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations
from typing import Any

import numpy as np
from caselink.linkage.comparisons import MISSING, Comparison, default_comparisons, tf_value
from caselink.linkage.model import (
    HOUSEHOLD_DOB_DISAGREES,
    HOUSEHOLD_FAMILY_AGREES,
    HOUSEHOLD_GIVEN_CONFLICT,
    HOUSEHOLD_SAME_HOME,
    TF_OTHERS,
    ComparisonParams,
    LinkageModel,
    TermFrequencies,
)
from caselink.linkage.record import LinkRecord, phonetic
from caselink.linkage.rules import DEFAULT_RULES, LinkageRules
from rapidfuzz.distance import JaroWinkler

_jaro_winkler = JaroWinkler.normalized_similarity


def comparison_matrix(
    pairs: Sequence[tuple[LinkRecord, LinkRecord]], comparisons: Sequence[Comparison]
) -> np.ndarray:
    out = np.empty((len(pairs), len(comparisons)), dtype=np.int8)
    for i, (a, b) in enumerate(pairs):
        for j, comparison in enumerate(comparisons):
            out[i, j] = comparison.compare(a, b)
    return out


def random_pair_levels(records: Sequence[LinkRecord], comparisons: Sequence[Comparison], n_pairs: int = 300_000,
                       seed: int = 42) -> np.ndarray:
    """Comparison levels of ``n_pairs`` random pairs of records (almost all non-matches)."""
    rng = random.Random(seed)
    n = len(records)
    if n < 2:
        raise ValueError("need at least two records to estimate u")
    pairs = []
    for _ in range(n_pairs):
        i, j = rng.randrange(n), rng.randrange(n)
        if i != j:
            pairs.append((records[i], records[j]))
    return comparison_matrix(pairs, comparisons)


def u_from_levels(matrix: np.ndarray, comparisons: Sequence[Comparison]) -> list[np.ndarray]:
    """u per level, with add-one smoothing so no level has u = 0."""
    u = []
    for j, comparison in enumerate(comparisons):
        column = matrix[:, j]
        counts = np.bincount(column[column != MISSING], minlength=comparison.n_levels).astype(float)
        u.append((counts + 1.0) / (counts.sum() + comparison.n_levels))
    return u


def estimate_u(
    records: Sequence[LinkRecord],
    comparisons: Sequence[Comparison],
    n_pairs: int = 300_000,
    seed: int = 42,
) -> list[np.ndarray]:
    """u per level from random pairs, with add-one smoothing so no level has u = 0."""
    return u_from_levels(random_pair_levels(records, comparisons, n_pairs, seed), comparisons)


def household_evidence(matrix: np.ndarray, comparisons: Sequence[Comparison], p_value: float = 1e-3,
                       at_least: int = 5) -> dict[str, Any]:
    """Does this data hold households? Among random pairs, count siblings' pattern: a family name
    and an address shared, first names and dates of birth that disagree; compare it with the count
    independent fields would give. People who live together make that pattern far commoner than
    chance. A duplicate with a corrupted first name keeps its date of birth, so a data set of
    isolated records with heavy duplication (FEBRL) does not show it, and there the household rule
    would only cost recall. On when the count is at least ``at_least`` and less likely than
    ``p_value`` under independence (Poisson)."""
    names = [c.name for c in comparisons]
    if not {"given_name", "family_name", "location", "date_of_birth"} <= set(names):
        return {"enabled": False, "reason": "needs given_name, family_name, date_of_birth and location comparisons"}
    given = matrix[:, names.index("given_name")]
    family = matrix[:, names.index("family_name")]
    home = matrix[:, names.index("location")]
    dob = matrix[:, names.index("date_of_birth")]
    n = len(matrix)
    parts = [(family >= 0) & (family <= HOUSEHOLD_FAMILY_AGREES), np.isin(home, list(HOUSEHOLD_SAME_HOME)),
             given == HOUSEHOLD_GIVEN_CONFLICT, dob >= HOUSEHOLD_DOB_DISAGREES]
    observed = int(np.logical_and.reduce(parts).sum())
    expected = float(np.prod([p.mean() for p in parts]) * n)
    tail = _poisson_tail(observed, expected)
    return {"enabled": bool(observed >= at_least and tail < p_value), "observed": observed,
            "expected": round(expected, 4), "p_value": tail, "pairs": n}


def _poisson_tail(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean)."""
    if k <= 0:
        return 1.0
    term = math.exp(-mean)
    below = term
    for i in range(1, k):
        term *= mean / i
        below += term
    return max(0.0, 1.0 - below)


def term_frequencies(records: Sequence[LinkRecord], field: str, min_count: int = 2,
                     top: int = 20_000) -> dict[str, float]:
    """Relative frequency of each value seen at least ``min_count`` times, the ``top`` most
    frequent at most. A value not in the table is taken to be as rare as the rarest one left out:
    under ``TF_OTHERS`` when the table was cut at ``top``, else seen once (the model's floor)."""
    counts = Counter(v for v in (tf_value(r, field) for r in records) if v)
    total = sum(counts.values())
    kept = counts.most_common(top + 1)
    table = {value: count / total for value, count in kept[:top] if count >= min_count}
    if len(kept) > top and kept[top][1] >= min_count:
        table[TF_OTHERS] = kept[top][1] / total
    return table


def model_term_frequencies(records: Sequence[LinkRecord], comparisons: Sequence[Comparison]) -> TermFrequencies:
    tables: dict[str, dict[str, float]] = {}
    out: TermFrequencies = {}
    for c in comparisons:
        for level, field in c.tf_levels:
            if field not in tables:
                tables[field] = term_frequencies(records, field)
            if tables[field]:
                out.setdefault(c.name, {})[level] = tables[field]
    return out


def learn_placeholders(records: Sequence[LinkRecord], min_records: int = 10, min_compared: int = 5,
                       similar_share: float = 0.3, alias_share: float = 0.3) -> tuple[set[str], set[str]]:
    """(given names, family names) that behave like fillers in this data, not names.

    Agencies hold the same people, so most records have a partner elsewhere: a record with the
    same date of birth and the same other name. A real name's partners carry that name again, or
    a variant of it (a typo, a nickname, a sound-alike). A filler ("UNKNOWN", "RESPONDENT") was put
    on the record instead of the person's name, so its partners carry real names unlike it. A
    value on at least ``min_records`` records, of which at least ``min_compared`` have partners,
    is taken as a filler when fewer than ``similar_share`` of those partners carry a similar name,
    and no one other name accounts for ``alias_share`` of the unlike ones (then it is an alias).
    """
    found: list[set[str]] = []
    for field, other in (("given", "family"), ("family", "given")):
        canon = "given_canon" if field == "given" else field
        carriers: dict[str, list[LinkRecord]] = defaultdict(list)
        partners: dict[tuple[str, str], list[LinkRecord]] = defaultdict(list)
        for r in records:
            value, partner = getattr(r, field), getattr(r, other)
            if value and partner and r.dob is not None:
                carriers[value].append(r)
                partners[(partner, r.dob.digits)].append(r)
        fillers = set()
        for value, holders in carriers.items():
            if len(holders) < min_records or len(value) < 2:  # a lone letter is an initial
                continue
            compared = similar = 0
            unlike: Counter[str] = Counter()
            for r in holders:
                others = [o for o in partners[(getattr(r, other), r.dob.digits)] if o is not r]  # type: ignore[union-attr]
                if not others:
                    continue
                compared += 1
                if any(_similar_name(getattr(r, field), getattr(o, field), getattr(r, canon), getattr(o, canon))
                       for o in others):
                    similar += 1
                else:
                    unlike.update({getattr(o, field) for o in others} - {None})
            if compared < min_compared or similar >= similar_share * compared:
                continue
            # A nickname or a short form ("Pepe" for José, "Berg" for Van den Berg) stands for one
            # name again and again; a filler stands for anyone's.
            top = unlike.most_common(1)[0][1] if unlike else 0
            if top < alias_share * sum(unlike.values()):
                fillers.add(value)
        found.append(fillers)
    return found[0], found[1]


def _similar_name(a: str, b: str, canon_a: str | None, canon_b: str | None) -> bool:
    return a == b or canon_a == canon_b or _jaro_winkler(a, b) >= 0.8 or phonetic(a) == phonetic(b)


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


def _same_given_and_dob(r: LinkRecord) -> Hashable | None:
    return (r.given_canon, r.dob.digits) if r.given_canon and r.dob else None


_LOCATION = frozenset({"location", "postcode", "address", "locality"})
SESSIONS = (
    # Same birthday and same home is a twin as often as a duplicate; same name and same home is a
    # grandfather and his grandson as often: location trains only where neither is shared.
    Session("same_date_of_birth", _same_dob, frozenset({"date_of_birth"}) | _LOCATION),
    Session("same_name", _same_name, frozenset({"given_name", "family_name"}) | _LOCATION),
    Session("same_given_name_and_date_of_birth", _same_given_and_dob, frozenset({"given_name", "date_of_birth"})),
)


def _initial_m(n_levels: int) -> np.ndarray:
    """A starting guess that matches mostly agree: mass falling off across the levels."""
    m = np.array([0.5**i for i in range(n_levels)], dtype=float)
    m[-1] = 0.05
    normalised: np.ndarray = m / m.sum()
    return normalised


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
            mass: np.ndarray = np.bincount(col[present], weights=weighted[present], minlength=comparison.n_levels)
            # Half a pair of pseudo-count per level: a level no training match showed is rare,
            # not impossible, so it must not veto a link on its own.
            mass = mass + 0.5
            new_m.append(mass / mass.sum())
        change = max(abs(new_prior - prior), *(float(np.max(np.abs(a - b))) for a, b in zip(new_m, m, strict=True)))
        m, prior = new_m, new_prior
        if change < tolerance:
            break
    return m, prior, iterations


def _hold_neutral(m: np.ndarray, u: np.ndarray, comparison: Comparison) -> np.ndarray:
    """m with its neutral levels set to u (weight 0), the rest scaled to keep the sum at 1."""
    if not comparison.neutral_levels:
        return m
    m = m.copy()
    neutral = list(comparison.neutral_levels)
    rest = [i for i in range(len(m)) if i not in comparison.neutral_levels]
    m[neutral] = u[neutral]
    m[rest] *= (1 - m[neutral].sum()) / m[rest].sum()
    return m


def present_schemes(records: Sequence[LinkRecord], rules: LinkageRules, min_values: int = 20) -> list[str]:
    """The shared schemes with enough values in the data to train their comparison on."""
    counts = Counter(scheme for r in records for scheme in r.ids)
    return [name for name in rules.schemes.shared if counts[name] >= min_values]


def train_model(
    records: Sequence[LinkRecord],
    version: str | None = None,
    comparisons: Sequence[Comparison] | None = None,
    u_pairs: int = 300_000,
    link_threshold: float = 0.90,
    review_threshold: float = 0.5,
    max_training_records: int = 300_000,
    seed: int = 42,
    rules: LinkageRules = DEFAULT_RULES,
    separate_address: bool = False,
) -> LinkageModel:
    """Train u, m, the prior and term frequencies on ``records`` (no labels needed).

    ``records`` must have been standardised under ``rules``, which the model carries. Without
    ``comparisons``, the model compares each shared identifier scheme the data holds enough of,
    then the person's details (``separate_address``: postcode, address and town apart).
    """
    if len(records) > max_training_records:
        records = random.Random(seed).sample(list(records), max_training_records)
    if comparisons is None:
        schemes = [rules.schemes.schemes[name] for name in present_schemes(records, rules)]
        comparisons = default_comparisons(schemes, separate_address)
    random_levels = random_pair_levels(records, comparisons, n_pairs=u_pairs, seed=seed)
    u = u_from_levels(random_levels, comparisons)
    household = household_evidence(random_levels, comparisons)
    names = [c.name for c in comparisons]
    estimates: dict[str, list[np.ndarray]] = defaultdict(list)
    session_info: dict[str, dict[str, Any]] = {}
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
    m_final = {c.name: _hold_neutral(np.mean(estimates[c.name], axis=0), uu, c)
               for c, uu in zip(comparisons, u, strict=True)}
    if "date_of_birth" in names and "same_date_of_birth" in session_info and "p_match" in session_info[
        "same_date_of_birth"
    ]:
        dob = names.index("date_of_birth")
        prior = prior_from_dob * u[dob][0] / m_final["date_of_birth"][0]
    if prior is None:
        prior = 1.0 / max(len(records), 2)
    prior = min(max(prior, 1e-12), 0.5)
    return LinkageModel(
        version=version or datetime.now(UTC).strftime("m%Y%m%d%H%M%S"),
        comparisons=[
            ComparisonParams(c.name, list(c.levels), [float(x) for x in m_final[c.name]], [float(x) for x in uu])
            for c, uu in zip(comparisons, u, strict=True)
        ],
        prior=prior,
        link_threshold=link_threshold,
        review_threshold=review_threshold,
        tf=model_term_frequencies(records, comparisons),
        tf_minimum=1.0 / max(len(records), 1),
        rules=rules,
        household_rule=household["enabled"],
        metadata={
            "household": household,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": len(records),
            "u_pairs": u_pairs,
            "sessions": session_info,
        },
    )
