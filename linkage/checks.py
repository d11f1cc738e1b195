"""Does this model fit this data? Checked before linking, because a model trained on other data
can be confidently wrong: a shared postal code weighs +10 in a country where codes are unique to a
street, and nothing at all where one placeholder code stands on nearly every record. Linking the
second kind of data with the first kind of model made every record one person.

The check compares, comparison by comparison, how often two records picked at random from the
data reach each level with how often the model expects unrelated records to (its u). A level
that random pairs reach far more often than the model expects, and that the model counts as
evidence for a match, is reported: with ``linkage.model_check: refuse`` linking stops there.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from caselink.linkage.comparisons import MISSING
from caselink.linkage.model import LinkageModel
from caselink.linkage.record import LinkRecord


@dataclass(frozen=True)
class Finding:
    comparison: str
    level: str
    observed: float  # share of random pairs in the data at this level (of those compared)
    expected: float  # the model's u
    weight: float  # what the model adds to a pair's match weight at this level
    message: str


def check_model(model: LinkageModel, records: Sequence[LinkRecord], pairs: int = 20_000, seed: int = 7,
                factor: float = 10.0, at_least: float = 0.01) -> list[Finding]:
    """Levels that random pairs of ``records`` reach ``factor`` times more often than the model's
    u says, in at least ``at_least`` of the pairs compared, while weighing for a match; and shared
    identifier schemes in the data that the model does not compare."""
    findings: list[Finding] = []
    if len(records) < 2:
        return findings
    rng = random.Random(seed)
    n = len(records)
    sample = [(records[rng.randrange(n)], records[rng.randrange(n)]) for _ in range(pairs)]
    sample = [(a, b) for a, b in sample if a is not b]
    for params, comparison in zip(model.comparisons, model._comparisons, strict=True):
        counts: Counter[int] = Counter()
        for a, b in sample:
            level = comparison.compare(a, b)
            if level != MISSING:
                counts[level] += 1
        compared = sum(counts.values())
        if compared < 100:
            continue
        for level, name in enumerate(comparison.levels):
            observed = counts[level] / compared
            expected = params.u[level]
            weight = params.weights()[level]
            if weight > 0 and observed >= at_least and observed > factor * expected:
                findings.append(Finding(
                    params.name, name, observed, expected, weight,
                    f"{params.name} '{name}': {observed:.1%} of random pairs of this data, against "
                    f"{expected:.3%} in the data model {model.version} was trained on; the model counts it "
                    f"as {weight:+.1f} towards a match. Train a model on this data (caselink train)."))
    compared_schemes = {p.name.partition(":")[2] for p in model.comparisons if p.name.startswith("identifier:")}
    held = Counter(scheme for r in records for scheme in r.ids)
    for scheme, count in sorted(held.items()):
        if scheme not in compared_schemes and count >= max(20, 0.01 * n):
            findings.append(Finding(
                f"identifier:{scheme}", "-", count / n, 0.0, 0.0,
                f"{count / n:.0%} of records hold a {scheme}, which model {model.version} does not compare "
                f"(it was trained without it): it still finds candidates and keeps people apart, but adds no "
                f"evidence. Train a model on this data (caselink train)."))
    return findings
