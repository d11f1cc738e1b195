"""The Fellegi-Sunter model: m and u per comparison level, a prior, thresholds, term frequencies.

A model is a versioned JSON file. Loading checks it thoroughly, because a silently wrong model
links the wrong people: probabilities outside (0, 1], level lists that do not match the code's
comparisons, or thresholds out of order all fail loudly with what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caselink.linkage.comparisons import BY_NAME, MISSING, Comparison
from caselink.linkage.record import LinkRecord

FORMAT = "caselink-linkage-model/1"


class ModelError(ValueError):
    """A model file that cannot be trusted; the message says which part and why."""


@dataclass
class ComparisonParams:
    name: str
    levels: list[str]
    m: list[float]
    u: list[float]

    def weights(self) -> list[float]:
        return [math.log2(m / u) for m, u in zip(self.m, self.u, strict=True)]


@dataclass(frozen=True)
class FieldWeight:
    field: str
    level: str
    weight: float


@dataclass
class LinkageModel:
    version: str
    comparisons: list[ComparisonParams]
    prior: float  # P(match) for a blocked candidate pair
    link_threshold: float = 0.90  # match probability at or above which two records are linked
    review_threshold: float = 0.50  # at or above this (and below link) a person should look
    tf: dict[str, dict[str, float]] = field(default_factory=dict)
    tf_minimum: float = 1e-5
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate()
        self.compile()

    # ----------------------------------------------------------------- validation
    def _validate(self) -> None:
        if not 0 < self.prior < 1:
            raise ModelError(f"prior must be in (0, 1), got {self.prior}")
        if not 0 < self.review_threshold <= self.link_threshold < 1:
            raise ModelError(
                f"thresholds must satisfy 0 < review ({self.review_threshold}) <= link ({self.link_threshold}) < 1"
            )
        seen = set()
        for params in self.comparisons:
            if params.name not in BY_NAME:
                raise ModelError(f"unknown comparison {params.name!r}; known: {', '.join(BY_NAME)}")
            if params.name in seen:
                raise ModelError(f"comparison {params.name!r} appears twice")
            seen.add(params.name)
            code_levels = list(BY_NAME[params.name].levels)
            if params.levels != code_levels:
                raise ModelError(f"{params.name}: levels {params.levels} do not match this version's {code_levels}")
            for kind, probs in (("m", params.m), ("u", params.u)):
                if len(probs) != len(code_levels):
                    raise ModelError(f"{params.name}.{kind} has {len(probs)} values for {len(code_levels)} levels")
                if any(not (0 < p <= 1) or math.isnan(p) for p in probs):
                    raise ModelError(f"{params.name}.{kind} has a probability outside (0, 1]: {probs}")
                if abs(sum(probs) - 1) > 1e-3:
                    raise ModelError(f"{params.name}.{kind} sums to {sum(probs):.4f}, not 1")
        for name, table in self.tf.items():
            if name not in seen:
                raise ModelError(f"term frequencies for {name!r}, which is not a comparison of this model")
            if any(not (0 < v <= 1) for v in table.values()):
                raise ModelError(f"term frequencies for {name!r} must be in (0, 1]")

    # ----------------------------------------------------------------- scoring
    def compile(self) -> None:
        """Precompute what scoring needs so the hot path is lookups and additions."""
        self._comparisons: tuple[Comparison, ...] = tuple(BY_NAME[p.name] for p in self.comparisons)
        self._weights: tuple[tuple[float, ...], ...] = tuple(tuple(p.weights()) for p in self.comparisons)
        self.prior_weight = math.log2(self.prior / (1 - self.prior))
        self.link_weight = math.log2(self.link_threshold / (1 - self.link_threshold))
        self.review_weight = math.log2(self.review_threshold / (1 - self.review_threshold))
        # Term-frequency adjustment replaces u of the exact level by the value's own frequency.
        self._tf: list[tuple[int, str, dict[str, float], float] | None] = []
        for params, comparison in zip(self.comparisons, self._comparisons, strict=True):
            table = self.tf.get(params.name)
            if table and comparison.tf_field:
                self._tf.append((0, comparison.tf_field, table, params.m[0]))
            else:
                self._tf.append(None)
        self._plan = tuple(zip(self._comparisons, self._weights, self._tf, strict=True))
        # The most each comparison can still add, so scoring can stop once a pair cannot reach a threshold.
        best = []
        for weights, tf in zip(self._weights, self._tf, strict=True):
            top = max(max(weights), 0.0)
            if tf is not None:
                top = max(top, math.log2(tf[3] / self.tf_minimum))
            best.append(top)
        self._still_possible = tuple(sum(best[i + 1:]) for i in range(len(best)))
        # The same plan flattened for the hot loop: no nested unpacking, no attribute lookups.
        # Term-frequency weights are worked out once per value here rather than per pair.
        self._fast_plan = tuple(
            (c.compare, w, tf[1] if tf else None,
             {v: self._tf_weight(tf, v) for v in tf[2]} if tf else None,
             self._tf_weight(tf, None) if tf else 0.0, possible)
            for (c, w, tf), possible in zip(self._plan, self._still_possible, strict=True))

    def score(self, a: LinkRecord, b: LinkRecord) -> tuple[float, list[int]]:
        """(match weight, comparison levels) of one pair."""
        total = self.prior_weight
        levels = []
        for comparison, weights, tf in self._plan:
            level = comparison.compare(a, b)
            levels.append(level)
            if level == MISSING:
                continue
            if tf is not None and level == 0:
                total += self._tf_weight(tf, getattr(a, tf[1]))
            else:
                total += weights[level]
        return total, levels

    def score_at_least(self, a: LinkRecord, b: LinkRecord, floor: float) -> tuple[float, list[int]] | None:
        """Like ``score``, but gives up (None) as soon as the pair cannot reach ``floor``."""
        total = self.prior_weight
        levels: list[int] = []
        append = levels.append
        for compare, weights, tf_field, tf_weights, tf_default, possible in self._fast_plan:
            level = compare(a, b)
            append(level)
            if level != MISSING:
                if level == 0 and tf_field is not None:
                    total += tf_weights.get(getattr(a, tf_field), tf_default)
                else:
                    total += weights[level]
            if total + possible < floor:
                return None
        return total, levels

    def _tf_weight(self, tf: tuple[int, str, dict[str, float], float], value: str) -> float:
        _, _, table, m_exact = tf
        freq = table.get(value, self.tf_minimum)
        return math.log2(m_exact / max(freq, self.tf_minimum))

    def explain(self, a: LinkRecord, b: LinkRecord) -> list[FieldWeight]:
        """The per-field weights that, with the prior, add up to the pair's match weight."""
        _, levels = self.score(a, b)
        return self.explain_levels(levels, a)

    def explain_levels(self, levels: Sequence[int], a: LinkRecord) -> list[FieldWeight]:
        if len(levels) != len(self._plan):
            raise ValueError(f"{len(levels)} levels for {len(self._plan)} comparisons")
        out = [self.prior_field_weight()]
        out.extend(self.field_weight(i, level, a) for i, level in enumerate(levels))
        return out

    def prior_field_weight(self) -> FieldWeight:
        return FieldWeight("prior", "prior", self.prior_weight)

    def field_weight(self, i: int, level: int, a: LinkRecord) -> FieldWeight:
        """Comparison ``i``'s contribution at ``level``, for a pair whose first record is ``a``."""
        comparison, weights, tf = self._plan[i]
        if level == MISSING:
            return FieldWeight(comparison.name, "missing", 0.0)
        if tf is not None and level == 0:
            return FieldWeight(comparison.name, "exact (term frequency adjusted)",
                               self._tf_weight(tf, getattr(a, tf[1])))
        return FieldWeight(comparison.name, comparison.levels[level], weights[level])

    def field_weight_key(self, i: int, level: int, a: LinkRecord) -> tuple[int, int, Any]:
        """Everything ``field_weight(i, level, a)`` depends on besides the model: the comparison,
        the level and, for a term-frequency adjusted level, the value (so callers can cache it)."""
        tf = self._tf[i]
        return (i, level, getattr(a, tf[1]) if tf is not None and level == 0 else None)

    @staticmethod
    def probability(weight: float) -> float:
        if weight > 60:
            return 1.0
        if weight < -60:
            return 0.0
        odds = 2.0**weight
        return odds / (1 + odds)

    # ----------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "prior": self.prior,
            "link_threshold": self.link_threshold,
            "review_threshold": self.review_threshold,
            "tf_minimum": self.tf_minimum,
            "comparisons": [
                {"name": p.name, "levels": p.levels, "m": p.m, "u": p.u} for p in self.comparisons
            ],
            "tf": self.tf,
            "metadata": self.metadata,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")

    @classmethod
    def from_json(cls, data: Any, source: str = "model") -> LinkageModel:
        if not isinstance(data, dict):
            raise ModelError(f"{source}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise ModelError(f"{source}: format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            comparisons = [
                ComparisonParams(c["name"], list(c["levels"]), [float(x) for x in c["m"]],
                                 [float(x) for x in c["u"]])
                for c in data["comparisons"]
            ]
            return cls(
                version=str(data["version"]),
                comparisons=comparisons,
                prior=float(data["prior"]),
                link_threshold=float(data["link_threshold"]),
                review_threshold=float(data["review_threshold"]),
                tf={k: {str(v): float(f) for v, f in t.items()} for k, t in (data.get("tf") or {}).items()},
                tf_minimum=float(data.get("tf_minimum", 1e-5)),
                metadata=dict(data.get("metadata") or {}),
            )
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed model ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: Path) -> LinkageModel:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_json(data, str(path))
