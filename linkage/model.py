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

from caselink.linkage.comparisons import IDENTIFIER_PREFIX, MISSING, Comparison, comparison_named
from caselink.linkage.record import LinkRecord
from caselink.linkage.rules import DEFAULT_RULES, LinkageRules
from caselink.linkage.standardise import standardise_postcode

FORMAT = "caselink-linkage-model/2"
OLD_FORMATS = {"caselink-linkage-model/1": "identifiers were one comparison then; they are one per scheme now"}


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


# How the term-frequency tables of a model are keyed: comparison -> level -> value -> frequency.
TermFrequencies = dict[str, dict[int, dict[str, float]]]
# The key of a table's frequency for values it does not list (a table cut short keeps its most
# frequent values; the others are at most this frequent). Without it, the model's floor.
TF_OTHERS = ""


HOUSEHOLD_FIELD = "household"
# How far below the link threshold the household rule leaves a pair: in the review band, not linked.
HOUSEHOLD_MARGIN = 0.01


@dataclass(frozen=True)
class HouseholdRule:
    """Two members of one household are never linked on the model's word alone.

    Fellegi-Sunter adds up evidence as if each field said something of its own, but in a
    household the family name, the address and (for twins) the date of birth are shared by
    different people: their sum swamps the one field that tells them apart. So a pair that shares
    a family name and an address, and whose first names disagree outright (siblings, twins) or
    whose dates of birth are more than ten years apart (a grandfather and his grandson of one
    name), is held just below the link threshold: at most a possible match, for a person to decide.
    """

    given: int
    family: int
    dob: int | None
    location: int | None
    cap: float

    @classmethod
    def for_comparisons(cls, names: list[str], cap: float) -> HouseholdRule | None:
        if "given_name" not in names or "family_name" not in names:
            return None
        where = names.index
        return cls(where("given_name"), where("family_name"),
                   where("date_of_birth") if "date_of_birth" in names else None,
                   where("location") if "location" in names else None, cap)

    def applies(self, levels: Sequence[int]) -> bool:
        family = levels[self.family]
        if family == MISSING or family > HOUSEHOLD_FAMILY_AGREES:
            return False
        if self.location is None or levels[self.location] not in HOUSEHOLD_SAME_HOME:
            return False
        dob = levels[self.dob] if self.dob is not None else MISSING
        return levels[self.given] == HOUSEHOLD_GIVEN_CONFLICT or dob == HOUSEHOLD_GENERATION_APART

    def describe(self, levels: Sequence[int]) -> str:
        if levels[self.given] == HOUSEHOLD_GIVEN_CONFLICT:
            return "first names conflict in one household (siblings, twins): for review"
        return "one household, a generation apart: for review"


# Levels of the comparisons the household rule reads (linkage.comparisons).
HOUSEHOLD_GIVEN_CONFLICT = 5  # given_name "else"
HOUSEHOLD_FAMILY_AGREES = 2  # family_name exact, jw_0.92, part_previous_or_swapped
HOUSEHOLD_GENERATION_APART = 6  # date_of_birth "else": more than ten years apart
HOUSEHOLD_DOB_DISAGREES = 3  # date_of_birth same_month or further apart
# location same_address, same_address_near_postcode, similar_address_same_postcode, similar_address
HOUSEHOLD_SAME_HOME = frozenset({0, 1, 2, 4})


@dataclass
class LinkageModel:
    version: str
    comparisons: list[ComparisonParams]
    prior: float  # P(match) for a blocked candidate pair
    link_threshold: float = 0.90  # match probability at or above which two records are linked
    review_threshold: float = 0.50  # at or above this (and below link) a person should look
    tf: TermFrequencies = field(default_factory=dict)
    tf_minimum: float = 1e-5
    rules: LinkageRules = DEFAULT_RULES
    # Training found households in the data (linkage.training.household_evidence): hold pairs
    # that look like two members of one for review (HouseholdRule).
    household_rule: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate()
        self.compile()

    def with_thresholds(self, link: float | None = None, review: float | None = None) -> LinkageModel:
        """The same model deciding at other thresholds (a deployment's choice, not the trainer's)."""
        if link is None and review is None:
            return self
        return LinkageModel(self.version, self.comparisons, self.prior,
                            self.link_threshold if link is None else link,
                            self.review_threshold if review is None else review,
                            self.tf, self.tf_minimum, self.rules, self.household_rule, self.metadata)

    # ----------------------------------------------------------------- validation
    def _validate(self) -> None:
        if not 0 < self.prior < 1:
            raise ModelError(f"prior must be in (0, 1), got {self.prior}")
        if not 0 < self.review_threshold <= self.link_threshold < 1:
            raise ModelError(
                f"thresholds must satisfy 0 < review ({self.review_threshold}) <= link ({self.link_threshold}) < 1"
            )
        seen = set()
        schemes = self.rules.schemes.schemes
        for params in self.comparisons:
            try:
                comparison = comparison_named(params.name, schemes)
            except KeyError as exc:
                raise ModelError(str(exc.args[0])) from None
            if params.name in seen:
                raise ModelError(f"comparison {params.name!r} appears twice")
            seen.add(params.name)
            code_levels = list(comparison.levels)
            if params.levels != code_levels:
                raise ModelError(f"{params.name}: levels {params.levels} do not match this version's {code_levels}")
            for kind, probs in (("m", params.m), ("u", params.u)):
                if len(probs) != len(code_levels):
                    raise ModelError(f"{params.name}.{kind} has {len(probs)} values for {len(code_levels)} levels")
                if any(not (0 < p <= 1) or math.isnan(p) for p in probs):
                    raise ModelError(f"{params.name}.{kind} has a probability outside (0, 1]: {probs}")
                if abs(sum(probs) - 1) > 1e-3:
                    raise ModelError(f"{params.name}.{kind} sums to {sum(probs):.4f}, not 1")
        for name, tables in self.tf.items():
            if name not in seen:
                raise ModelError(f"term frequencies for {name!r}, which is not a comparison of this model")
            levels = dict(comparison_named(name, schemes).tf_levels)
            for level, table in tables.items():
                if level not in levels:
                    raise ModelError(f"term frequencies for {name} level {level}, which takes none")
                if any(not (0 < v <= 1) for v in table.values()):
                    raise ModelError(f"term frequencies for {name!r} must be in (0, 1]")

    # ----------------------------------------------------------------- scoring
    def compile(self) -> None:
        """Precompute what scoring needs so the hot path is lookups and additions."""
        schemes = self.rules.schemes.schemes
        self._comparisons: tuple[Comparison, ...] = tuple(comparison_named(p.name, schemes) for p in self.comparisons)
        self._weights: tuple[tuple[float, ...], ...] = tuple(tuple(p.weights()) for p in self.comparisons)
        self.prior_weight = math.log2(self.prior / (1 - self.prior))
        self.link_weight = math.log2(self.link_threshold / (1 - self.link_threshold))
        self.review_weight = math.log2(self.review_threshold / (1 - self.review_threshold))
        # Term-frequency adjustment replaces u at a level by the value's own frequency: per
        # comparison, level -> (record attribute, {value: weight}, weight of a value not in the table).
        self._tf: list[dict[int, tuple[str, dict[Any, float], float]] | None] = []
        for params, comparison in zip(self.comparisons, self._comparisons, strict=True):
            tables = self.tf.get(params.name) or {}
            adjusted = {}
            for level, attribute in comparison.tf_levels:
                table = tables.get(level)
                if table:
                    m = params.m[level]
                    by_value = {_tf_key(attribute, v): self._tf_weight(m, f)
                                for v, f in table.items() if v != TF_OTHERS}
                    adjusted[level] = (attribute, by_value, self._tf_weight(m, table.get(TF_OTHERS)))
            self._tf.append(adjusted or None)
        self._plan = tuple(zip(self._comparisons, self._weights, self._tf, strict=True))
        self._household = HouseholdRule.for_comparisons(
            [c.name for c in self._comparisons], self.link_weight - HOUSEHOLD_MARGIN) if self.household_rule else None
        # The most each comparison can still add, so scoring can stop once a pair cannot reach a threshold.
        best = []
        for weights, tf in zip(self._weights, self._tf, strict=True):
            top = max(max(weights), 0.0)
            if tf is not None:
                top = max(top, *(max(default, *table.values()) for _, table, default in tf.values()))
            best.append(top)
        self._still_possible = tuple(sum(best[i + 1:]) for i in range(len(best)))
        # The same plan flattened for the hot loop: no nested unpacking, no attribute lookups.
        # Identifier comparisons come first and are all missing unless both records hold an
        # identifier (most pairs): the plan skips them together then.
        n_ids = 0
        while n_ids < len(self._comparisons) and self._comparisons[n_ids].name.startswith(IDENTIFIER_PREFIX):
            n_ids += 1
        plan = tuple((c.compare, w, tf, possible)
                     for (c, w, tf), possible in zip(self._plan, self._still_possible, strict=True))
        self._id_plan, self._fast_plan = plan[:n_ids], plan[n_ids:]
        self._no_ids = [MISSING] * n_ids
        self._after_ids = sum(best[n_ids:])  # the most the comparisons after the identifiers can add

    def _tf_weight(self, m: float, frequency: float | None) -> float:
        return math.log2(m / max(frequency or self.tf_minimum, self.tf_minimum))

    def score(self, a: LinkRecord, b: LinkRecord) -> tuple[float, list[int]]:
        """(match weight, comparison levels) of one pair."""
        total = self.prior_weight
        levels = []
        for comparison, weights, tf in self._plan:
            level = comparison.compare(a, b)
            levels.append(level)
            if level == MISSING:
                continue
            adjusted = tf.get(level) if tf is not None else None
            if adjusted is not None:
                attribute, table, default = adjusted
                total += table.get(getattr(a, attribute), default)
            else:
                total += weights[level]
        household = self._household
        if household is not None and total > household.cap and household.applies(levels):
            total = household.cap
        return total, levels

    def score_at_least(self, a: LinkRecord, b: LinkRecord, floor: float) -> tuple[float, list[int]] | None:
        """Like ``score``, but gives up (None) as soon as the pair cannot reach ``floor``."""
        total = self.prior_weight
        if self._id_plan and a.ids and b.ids:
            levels: list[int] = []
            append = levels.append
            for compare, weights, _tf, possible in self._id_plan:
                level = compare(a, b)
                append(level)
                if level != MISSING:
                    total += weights[level]
                if total + possible < floor:
                    return None
        else:
            levels = self._no_ids.copy()
            append = levels.append
            if total + self._after_ids < floor:
                return None
        for compare, weights, tf, possible in self._fast_plan:
            level = compare(a, b)
            append(level)
            if level != MISSING:
                if tf is not None and level in tf:
                    attribute, table, default = tf[level]
                    total += table.get(getattr(a, attribute), default)
                else:
                    total += weights[level]
            if total + possible < floor:
                return None
        household = self._household
        if household is not None and total > household.cap and household.applies(levels):
            total = household.cap
            if total < floor:
                return None
        return total, levels

    def explain(self, a: LinkRecord, b: LinkRecord) -> list[FieldWeight]:
        """The per-field weights that, with the prior, add up to the pair's match weight."""
        _, levels = self.score(a, b)
        return self.explain_levels(levels, a)

    def explain_levels(self, levels: Sequence[int], a: LinkRecord) -> list[FieldWeight]:
        if len(levels) != len(self._plan):
            raise ValueError(f"{len(levels)} levels for {len(self._plan)} comparisons")
        out = [self.prior_field_weight()]
        out.extend(self.field_weight(i, level, a) for i, level in enumerate(levels))
        cut = self.household_cut(levels, sum(f.weight for f in out))
        if cut is not None:
            out.append(cut)
        return out

    def household_cut(self, levels: Sequence[int], total: float) -> FieldWeight | None:
        """What the household rule takes off a pair whose parts add up to ``total``, if anything."""
        household = self._household
        if household is None or total <= household.cap or not household.applies(levels):
            return None
        return FieldWeight(HOUSEHOLD_FIELD, household.describe(levels), household.cap - total)

    def prior_field_weight(self) -> FieldWeight:
        return FieldWeight("prior", "prior", self.prior_weight)

    def field_weight(self, i: int, level: int, a: LinkRecord) -> FieldWeight:
        """Comparison ``i``'s contribution at ``level``, for a pair whose first record is ``a``."""
        comparison, weights, tf = self._plan[i]
        if level == MISSING:
            return FieldWeight(comparison.name, "missing", 0.0)
        adjusted = tf.get(level) if tf is not None else None
        if adjusted is not None:
            attribute, table, default = adjusted
            return FieldWeight(comparison.name, f"{comparison.levels[level]} (term frequency adjusted)",
                               table.get(getattr(a, attribute), default))
        return FieldWeight(comparison.name, comparison.levels[level], weights[level])

    def field_weight_key(self, i: int, level: int, a: LinkRecord) -> tuple[int, int, Any]:
        """Everything ``field_weight(i, level, a)`` depends on besides the model: the comparison,
        the level and, for a term-frequency adjusted level, the value (so callers can cache it)."""
        tf = self._tf[i]
        adjusted = tf.get(level) if tf is not None else None
        return (i, level, getattr(a, adjusted[0]) if adjusted is not None else None)

    @staticmethod
    def probability(weight: float) -> float:
        if weight > 60:
            return 1.0
        if weight < -60:
            return 0.0
        odds: float = 2.0**weight
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
            "tf": {name: {str(level): table for level, table in tables.items()} for name, tables in self.tf.items()},
            "rules": self.rules.to_json(),
            "household_rule": self.household_rule,
            "metadata": self.metadata,
        }

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")
        tmp.replace(path)

    @classmethod
    def from_json(cls, data: Any, source: str = "model") -> LinkageModel:
        if not isinstance(data, dict):
            raise ModelError(f"{source}: expected a JSON object")
        if data.get("format") in OLD_FORMATS:
            raise ModelError(f"{source}: a {data['format']} model ({OLD_FORMATS[data['format']]}): train a new one "
                             f"with `caselink train`")
        if data.get("format") != FORMAT:
            raise ModelError(f"{source}: format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            comparisons = [
                ComparisonParams(c["name"], list(c["levels"]), [float(x) for x in c["m"]],
                                 [float(x) for x in c["u"]])
                for c in data["comparisons"]
            ]
            tf = {name: {int(level): {str(v): float(f) for v, f in table.items()} for level, table in tables.items()}
                  for name, tables in (data.get("tf") or {}).items()}
            return cls(
                version=str(data["version"]),
                comparisons=comparisons,
                prior=float(data["prior"]),
                link_threshold=float(data["link_threshold"]),
                review_threshold=float(data["review_threshold"]),
                tf=tf,
                tf_minimum=float(data.get("tf_minimum", 1e-5)),
                rules=LinkageRules.from_json(data["rules"]),
                household_rule=bool(data.get("household_rule", False)),
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


def _tf_key(attribute: str, value: str) -> Any:
    """A term-frequency table's value as the record holds it (a postal code as its parts)."""
    return standardise_postcode(value) if attribute == "postcode" else value
