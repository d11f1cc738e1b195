"""The policy language: which purposes exist and what each may receive, in one YAML file.

A purpose names its legal basis, whether explicit consent is required, whether national opt-outs
apply, whether a statutory basis overrides a recorded refusal, which agencies' records and which
fields may flow, the minimum match weight for a member to be included, the most sensitive case
that may flow, and whether output is pseudonymised. Errors name the file and line, and a policy
that lets a direct identifier into a pseudonymised purpose is refused: the gate fails closed, so
a policy it cannot load releases nothing. See docs/policy-language.md.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from caselink.core.yaml_lines import line_of_path, load_yaml_with_lines

SENSITIVITY_ORDER = {"normal": 0, "restricted": 1, "sealed": 2}

# Fields a purpose may receive. Derived fields (year_of_birth, postcode_district) exist so that
# pseudonymised purposes can still be useful without direct identifiers.
DIRECT_IDENTIFIER_FIELDS = frozenset({
    "given_names", "family_name", "other_names", "date_of_birth", "identifiers", "address",
    "postcode", "phones", "emails",
})
QUASI_FIELDS = frozenset({"year_of_birth", "sex", "postcode_district", "cases"})
IDENTIFIER_FIELD = re.compile(r"^identifiers\.[a-z][a-z0-9_]*$")
PURPOSE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PolicyError(ValueError):
    """The policy file is wrong; the message lists every problem as ``file:line: ...``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# A field a consent names covers the fields derived from it: an objection to ``date_of_birth``
# removes ``year_of_birth`` too, and a permit for ``address`` lets ``postcode_district`` through.
DERIVED_FIELDS = {
    "date_of_birth": frozenset({"year_of_birth"}),
    "address": frozenset({"postcode", "postcode_district"}),
    "postcode": frozenset({"postcode_district"}),
}


def covers_field(named: str, key: str) -> bool:
    """Whether a consent naming field ``named`` covers the released value ``key`` (a field name, or
    ``identifiers.<scheme>`` for one identifier)."""
    if named == key or key in DERIVED_FIELDS.get(named, ()):
        return True
    return named == "identifiers" and key.startswith("identifiers.")


def is_known_field(name: str) -> bool:
    return name in DIRECT_IDENTIFIER_FIELDS or name in QUASI_FIELDS or bool(IDENTIFIER_FIELD.match(name))


def is_direct_identifier(name: str) -> bool:
    return name in DIRECT_IDENTIFIER_FIELDS or bool(IDENTIFIER_FIELD.match(name))


class Purpose(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    legal_basis: str = Field(min_length=1)
    consent: Literal["required", "not_required"]
    national_opt_out: bool
    statutory_override: bool = False
    agencies: tuple[str, ...] = Field(min_length=1)
    fields: tuple[str, ...] = Field(min_length=1)
    min_match_weight: float = 0.0
    max_sensitivity: Literal["normal", "restricted", "sealed"] = "normal"
    pseudonymise: bool = False

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in fields if not is_known_field(f)]
        if unknown:
            allowed = [*sorted(DIRECT_IDENTIFIER_FIELDS | QUASI_FIELDS), "identifiers.<scheme>"]
            raise ValueError(f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}")
        return fields

    @model_validator(mode="after")
    def _coherent(self) -> Purpose:
        if self.pseudonymise:
            direct = [f for f in self.fields if is_direct_identifier(f)]
            if direct:
                raise ValueError(f"pseudonymised output may not carry direct identifiers {direct}")
        if self.statutory_override and self.consent == "required":
            raise ValueError("a purpose that requires consent cannot also override a refusal")
        return self

    def allows_agency(self, agency: str) -> bool:
        return "*" in self.agencies or agency in self.agencies

    def allows_sensitivity(self, sensitivity: str | None) -> bool:
        rank = SENSITIVITY_ORDER.get((sensitivity or "normal").lower())
        return rank is not None and rank <= SENSITIVITY_ORDER[self.max_sensitivity]


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    purposes: dict[str, Purpose] = Field(min_length=1)

    @field_validator("purposes")
    @classmethod
    def _names(cls, purposes: dict[str, Purpose]) -> dict[str, Purpose]:
        bad = [name for name in purposes if not PURPOSE_NAME.match(name)]
        if bad:
            raise ValueError(f"purpose names must be lower-case letters, digits and _: {bad}")
        return purposes

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever anything in the policy changes, even if the version was not bumped."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    @cached_property
    def label(self) -> str:
        return f"{self.version}#{self.fingerprint}"


def parse_policy(text: str, file: str = "<policy>") -> Policy:
    data = load_yaml_with_lines(text, file, lambda message: PolicyError([message]))
    if not isinstance(data, dict):
        raise PolicyError([f"{file}:1: a policy file must be a YAML mapping with version and purposes"])
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError([_problem(file, data, err) for err in exc.errors()]) from None


def _problem(file: str, data: Any, err: Any) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    where = ".".join(str(p) for p in loc) or "(top level)"
    message = err["msg"].removeprefix("Value error, ")
    return f"{file}:{line_of_path(data, loc)}: {where}: {message}"


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read the policy file: {exc.strerror}"]) from None
    return parse_policy(text, str(path))


def bundled_policy_path() -> Path:
    """The example policy shipped with the samples (package data, found the same way in a
    checkout and in an installed wheel)."""
    return Path(str(resources.files("caselink.samples") / "policy.yaml"))
