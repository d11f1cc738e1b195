"""What standardising a record needs to know about the deployment, besides the code.

Two deployments can hold the same person record and mean different things by it: which
identifiers are shared and how they are checked (``linkage.schemes``), and which names are not
names at all but fillers ("UNKNOWN", "BABY GIRL", a lone "X") that must count as missing rather
than as a disagreement. These rules travel inside the model file, so the normaliser, the linker,
``caselink link`` and a rebuild all standardise the same way; their fingerprint goes into packed
records, so a record standardised under other rules is standardised again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from caselink.linkage.schemes import DEFAULT_CATALOGUE, SchemeCatalogue

# Fillers seen in administrative data in place of a name: compared as "missing", never as a
# disagreement. A deployment adds its own (linkage.placeholder_names) and training learns more
# from the data (linkage.training.learn_placeholders). Written as standardised (lower case).
DEFAULT_PLACEHOLDER_NAMES = frozenset({
    "unknown", "unk", "unkn", "not known", "notknown", "not stated", "not given", "none", "nil", "null", "na",
    "n a", "nfn", "nmn", "nln", "fnu", "lnu", "no name", "noname", "no first name", "no last name",
    "anonymous", "anon", "test", "xx", "xxx", "xxxx", "zz", "zzz", "baby", "baby boy", "baby girl", "babyboy",
    "babygirl", "boy", "girl", "infant", "newborn", "new born", "unborn", "stillborn", "twin", "twin a",
    "twin b", "twin 1", "twin 2", "male", "female", "child", "patient", "client", "person", "resident",
    "occupant", "tenant", "respondent", "householder", "head", "spouse", "wife", "husband", "son",
    "daughter", "mother", "father", "parent", "guardian", "other", "mr", "mrs", "ms", "miss", "mx", "dr",
})


@dataclass(frozen=True)
class LinkageRules:
    schemes: SchemeCatalogue = field(default_factory=lambda: DEFAULT_CATALOGUE)
    # Standardised name values (whole field, lower case) that mean "no name given".
    placeholder_names: frozenset[str] = DEFAULT_PLACEHOLDER_NAMES
    # Learned from a deployment's data: per field, values that behave like fillers there.
    learned_given: frozenset[str] = frozenset()
    learned_family: frozenset[str] = frozenset()

    def given_placeholders(self) -> frozenset[str]:
        return self.placeholder_names | self.learned_given

    def family_placeholders(self) -> frozenset[str]:
        return self.placeholder_names | self.learned_family

    @cached_property
    def typo_schemes(self) -> frozenset[str]:
        """Shared schemes whose values can be mistyped without failing a check."""
        return frozenset(n for n, s in self.schemes.shared.items() if s.typos)

    def with_learned(self, given: Iterable[str], family: Iterable[str]) -> LinkageRules:
        return LinkageRules(self.schemes, self.placeholder_names, frozenset(given), frozenset(family))

    def to_json(self) -> dict[str, Any]:
        return {
            "identifier_schemes": self.schemes.config(),
            "placeholder_names": sorted(self.placeholder_names),
            "learned_placeholders": {"given_name": sorted(self.learned_given),
                                     "family_name": sorted(self.learned_family)},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinkageRules:
        learned = data.get("learned_placeholders") or {}
        return cls(
            schemes=SchemeCatalogue.from_config(data["identifier_schemes"], include_built_in=False),
            placeholder_names=frozenset(str(v) for v in data.get("placeholder_names", ())),
            learned_given=frozenset(str(v) for v in learned.get("given_name", ())),
            learned_family=frozenset(str(v) for v in learned.get("family_name", ())),
        )

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


DEFAULT_RULES = LinkageRules()
