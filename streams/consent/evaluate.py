"""What one purpose may see of one citizen: the decision the gate makes, as a pure function.

Rules (fail closed; see docs/policy-language.md):

* an unknown purpose, or a pseudonymised purpose without a key, releases nothing;
* a member is considered only if the purpose takes its agency and, in a citizen of several
  records, its match weight reaches the purpose's minimum;
* consents that apply to a citizen are those about its id or any id merged into it, about any of
  its records, or about any identifier its records carry; each is scoped by purpose and agency;
* where consent is required, a member needs an active PERMIT; a DENY (objection) without fields
  removes the member, a DENY with fields removes those fields; where national opt-outs apply, an
  opt-out removes the member;
* a purpose with ``statutory_override`` releases despite a refusal and says so in its basis;
* fields are the purpose's fields, narrowed by permits that name fields, less denied fields;
  cases above the purpose's maximum sensitivity never flow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caselink.linkage.standardise import standardise_postcode
from caselink.streams.consent.policy import Policy, Purpose
from caselink.streams.consent.pseudonym import Pseudonymiser
from caselink.streams.consent.register import Provision, identifier_value


@dataclass
class View:
    """The permitted view of one citizen for one purpose (a GatedCase without its timestamp)."""

    citizen_id: str
    citizen_ref: str
    purpose: str
    basis: str
    pseudonymised: bool
    key_id: str | None
    members: list[dict[str, Any]]
    agencies: list[str]
    fields: list[str]
    overrides: list[str] = field(default_factory=list)  # consent ids a statutory basis overrode

    def record(self, policy_label: str, released_at: datetime) -> dict[str, Any]:
        return {"citizen_ref": self.citizen_ref, "purpose": self.purpose, "basis": self.basis,
                "pseudonymised": self.pseudonymised, "key_id": self.key_id, "members": self.members,
                "policy_version": policy_label, "released_at": released_at}

    @property
    def digest(self) -> str:
        body = json.dumps([self.citizen_ref, self.basis, self.key_id, self.members], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Refusal:
    """Why nothing was released; carried into the retraction's audit record."""

    reason: str


def subjects_of(case: dict[str, Any], ancestry: Iterable[str]) -> set[str]:
    """Every subject key under which consent about this citizen may have been recorded."""
    subjects = {f"citizen:{case['citizen_id']}", *(f"citizen:{a}" for a in ancestry)}
    for m in case["members"]:
        subjects.add(f"record:{m['agency']}:{m['source_record_id']}")
        for scheme, value in ((m.get("person") or {}).get("identifiers") or {}).items():
            if value:
                subjects.add(f"identifier:{scheme}:{identifier_value(value)}")
    return subjects


def evaluate(case: dict[str, Any], purpose_name: str, policy: Policy | None, provisions: list[Provision],
             now: datetime, pseudonymiser: Pseudonymiser | None) -> View | Refusal:
    if policy is None:
        return Refusal("no valid policy loaded")
    purpose = policy.purposes.get(purpose_name)
    if purpose is None:
        return Refusal(f"purpose {purpose_name} is not in policy {policy.version}")
    if purpose.pseudonymise and pseudonymiser is None:
        return Refusal("pseudonymised purpose but no pseudonymisation key is configured")
    members = case["members"]
    active = [p for p in provisions if p.active(now)]
    overrides: set[str] = set()
    released: list[dict[str, Any]] = []
    reasons: list[str] = []
    for m in members:
        agency = m["agency"]
        if not purpose.allows_agency(agency):
            continue
        if len(members) > 1 and m["match_weight"] < purpose.min_match_weight:
            reasons.append(f"{agency} record linked below match weight {purpose.min_match_weight}")
            continue
        # National opt-outs count only for purposes they apply to; an opt-out is always whole.
        covering = [p for p in active if p.covers(purpose_name, agency)
                    and (not p.national_opt_out or purpose.national_opt_out)]
        fields = set(purpose.fields)
        refusals = [p for p in covering if not p.permit and (not p.fields or p.national_opt_out)]
        if purpose.consent == "required":
            permits = [p for p in covering if p.permit]
            if not permits:
                reasons.append(f"no consent recorded for {agency} records")
                continue
            if all(p.fields for p in permits):
                fields &= set().union(*(p.fields for p in permits))
        if refusals:
            if not purpose.statutory_override:
                kinds = sorted({"national opt-out" if p.national_opt_out else "objection" for p in refusals})
                reasons.append(f"{' and '.join(kinds)} for {agency} records")
                continue
            overrides.update(p.consent_id for p in refusals)
        elif not purpose.statutory_override:
            for p in covering:
                if not p.permit and p.fields:
                    fields -= p.fields
        projected = _project(m, fields, purpose, purpose_name, pseudonymiser)
        if projected is not None:
            released.append(projected)
    if not released:
        return Refusal("; ".join(dict.fromkeys(reasons)) or "no records of an agency this purpose may receive")
    basis = purpose.legal_basis
    if purpose.consent == "required":
        basis += "; explicit consent"
    if overrides:
        basis += f"; statutory basis overrides recorded refusal ({', '.join(sorted(overrides))})"
    citizen_ref = (pseudonymiser.pseudonym(purpose_name, "citizen", case["citizen_id"])
                   if purpose.pseudonymise and pseudonymiser else case["citizen_id"])
    released.sort(key=lambda m: (m["agency"], m["record_ref"]))
    return View(
        citizen_id=case["citizen_id"], citizen_ref=citizen_ref, purpose=purpose_name, basis=basis,
        pseudonymised=purpose.pseudonymise, key_id=pseudonymiser.key_id if purpose.pseudonymise and pseudonymiser
        else None, members=released, agencies=sorted({m["agency"] for m in released}),
        fields=sorted({f for m in released for f in m["fields"]} | ({"cases"} if any(m["cases"] for m in released)
                                                                     else set())),
        overrides=sorted(overrides),
    )


def _project(member: dict[str, Any], fields: set[str], purpose: Purpose, purpose_name: str,
             pseudonymiser: Pseudonymiser | None) -> dict[str, Any] | None:
    """The member reduced to ``fields``; pseudonymised references where the purpose says so."""
    person = member.get("person") or {}
    hide: Callable[[str, str], str] = (
        (lambda kind, value: pseudonymiser.pseudonym(purpose_name, kind, value))  # type: ignore[union-attr]
        if purpose.pseudonymise else (lambda kind, value: value))
    record_key = f"{member['agency']}:{member['source_record_id']}"
    values: dict[str, str] = {}
    for name in fields:
        for key, value in _field_values(person, name):
            if value:
                values[key] = value
    cases = []
    if "cases" in fields:
        for case in member.get("cases") or []:
            if not purpose.allows_sensitivity(case.get("sensitivity")):
                continue
            cases.append({**case, "case_id": hide("case", f"{member['agency']}:{case['case_id']}")
                          if purpose.pseudonymise else case["case_id"]})
    return {"agency": member["agency"], "record_ref": hide("record", record_key), "fields": values, "cases": cases}


def _field_values(person: dict[str, Any], name: str) -> list[tuple[str, str | None]]:
    addresses = person.get("addresses") or []
    first = addresses[0] if addresses else {}
    dob = person.get("date_of_birth")
    identifiers = person.get("identifiers") or {}
    match name:
        case "given_names" | "family_name" | "date_of_birth" | "sex":
            return [(name, person.get(name))]
        case "other_names" | "phones" | "emails":
            return [(name, ", ".join(person.get(name) or []))]
        case "year_of_birth":
            return [(name, dob[:4] if dob and len(dob) >= 4 else None)]
        case "postcode":
            return [(name, first.get("postcode"))]
        case "postcode_district":
            postcode = standardise_postcode(first.get("postcode")) if first else None
            return [(name, postcode.district if postcode else None)]
        case "address":
            return [(name, " | ".join(_address_text(a) for a in addresses) or None)]
        case "identifiers":
            return [(f"identifiers.{s}", v) for s, v in sorted(identifiers.items())]
        case _ if name.startswith("identifiers."):
            return [(name, identifiers.get(name.split(".", 1)[1]))]
    return []  # "cases" is handled by the caller


def _address_text(address: dict[str, Any]) -> str:
    parts = [*address.get("lines", []), address.get("locality"), address.get("region"), address.get("postcode"),
             address.get("country")]
    return ", ".join(p for p in parts if p)
