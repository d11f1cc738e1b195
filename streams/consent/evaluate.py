"""What one purpose may see of one citizen: the decision the gate makes, as a pure function.

Rules (fail closed; see docs/policy-language.md):

* an unknown purpose, or a pseudonymised purpose without a key, releases nothing;
* a member is considered only if the purpose takes its agency and, in a citizen of several
  records, its match weight reaches the purpose's minimum;
* consents that apply to a citizen are those about its id or any id merged into it, about any of
  its records, or about any identifier its records carry; each is scoped by purpose and agency;
* a refusal (DENY, with or without fields, or a national opt-out) covers every record of the
  citizen it resolves to; a PERMIT about a record or an identifier covers only that record, or the
  records carrying that identifier (a permission does not travel across a probabilistic link to
  data nobody asked the person about); a PERMIT about the citizen covers all of its records;
* where consent is required, a member needs an active PERMIT; a DENY (objection) without fields
  removes the member, a DENY with fields removes those fields; where national opt-outs apply, an
  opt-out removes the member;
* a purpose with ``statutory_override`` releases despite every refusal, field-scoped ones
  included, and names each one it overrode in the basis (and the Disclosure);
* fields are the purpose's fields, narrowed by permits that name fields, less denied fields; a
  field a consent names covers the fields derived from it (``identifiers`` every
  ``identifiers.<scheme>``, ``date_of_birth`` ``year_of_birth``, ``address`` ``postcode`` and
  ``postcode_district``, ``postcode`` ``postcode_district``); cases above the purpose's maximum
  sensitivity never flow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caselink.linkage.standardise import standardise_postcode
from caselink.streams.consent.policy import Policy, Purpose, covers_field
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


def member_subjects(member: dict[str, Any]) -> set[str]:
    """The subject keys that name this record: the record itself and each identifier it carries."""
    subjects = {f"record:{member['agency']}:{member['source_record_id']}"}
    for scheme, value in ((member.get("person") or {}).get("identifiers") or {}).items():
        if value:
            subjects.add(f"identifier:{scheme}:{identifier_value(value)}")
    return subjects


def subjects_of(case: dict[str, Any], ancestry: Iterable[str]) -> set[str]:
    """Every subject key under which consent about this citizen may have been recorded."""
    subjects = {f"citizen:{case['citizen_id']}", *(f"citizen:{a}" for a in ancestry)}
    for m in case["members"]:
        subjects |= member_subjects(m)
    return subjects


def refusal_kind(provision: Provision) -> str:
    if provision.national_opt_out:
        return "national opt-out"
    if provision.fields:
        return f"objection to {', '.join(sorted(provision.fields))}"
    return "objection"


def compose_basis(legal_basis: str, consent_required: bool, overridden: dict[str, str]) -> str:
    """The release's basis: the policy's text, explicit consent where required, and every refusal
    a statutory basis overrode (``consent id -> kind``). Phrases are separated by ``; `` and none
    is repeated, whatever the policy text already says."""
    phrases = [p.strip() for p in legal_basis.split(";") if p.strip()]
    if consent_required:
        phrases.append("explicit consent")
    if overridden:
        named = ", ".join(f"{cid} ({kind})" for cid, kind in sorted(overridden.items()))
        phrases.append(f"statutory basis overrides recorded refusals: {named}")
    seen: dict[str, str] = {}
    for phrase in phrases:
        seen.setdefault(phrase.casefold(), phrase)
    return "; ".join(seen.values())


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
    # National opt-outs count only for purposes they apply to.
    active = [p for p in provisions if p.active(now) and p.purpose in ("*", purpose_name)
              and (not p.national_opt_out or purpose.national_opt_out)]
    overridden: dict[str, str] = {}
    released: list[dict[str, Any]] = []
    reasons: list[str] = []
    for m in members:
        agency = m["agency"]
        if not purpose.allows_agency(agency):
            continue
        if len(members) > 1 and m["match_weight"] < purpose.min_match_weight:
            reasons.append(f"{agency} record linked below match weight {purpose.min_match_weight}")
            continue
        covering = [p for p in active if p.covers(purpose_name, agency)]
        own = member_subjects(m) if any(p.permit for p in covering) else set()
        permits = [p for p in covering if p.permit and (p.subject.startswith("citizen:") or p.subject in own)]
        refusals = [p for p in covering if not p.permit]
        whole = [p for p in refusals if not p.fields or p.national_opt_out]  # an opt-out is always whole
        permitted: frozenset[str] | None = None  # None: every field of the purpose
        denied: frozenset[str] = frozenset()
        if purpose.consent == "required":
            if not permits:
                reasons.append(f"no consent recorded for {agency} records")
                continue
            if all(p.fields for p in permits):
                permitted = frozenset().union(*(p.fields for p in permits))
        if purpose.statutory_override:
            overridden.update((p.consent_id, refusal_kind(p)) for p in refusals)
        elif whole:
            kinds = sorted({"national opt-out" if p.national_opt_out else "objection" for p in whole})
            reasons.append(f"{' and '.join(kinds)} for {agency} records")
            continue
        else:
            denied = frozenset().union(*(p.fields for p in refusals))
        released.append(_project(m, purpose, purpose_name, pseudonymiser, permitted, denied))
    if not released:
        return Refusal("; ".join(dict.fromkeys(reasons)) or "no records of an agency this purpose may receive")
    basis = compose_basis(purpose.legal_basis, purpose.consent == "required", overridden)
    citizen_ref = (pseudonymiser.pseudonym(purpose_name, "citizen", case["citizen_id"])
                   if purpose.pseudonymise and pseudonymiser else case["citizen_id"])
    released.sort(key=lambda m: (m["agency"], m["record_ref"]))
    return View(
        citizen_id=case["citizen_id"], citizen_ref=citizen_ref, purpose=purpose_name, basis=basis,
        pseudonymised=purpose.pseudonymise, key_id=pseudonymiser.key_id if purpose.pseudonymise and pseudonymiser
        else None, members=released, agencies=sorted({m["agency"] for m in released}),
        fields=sorted({f for m in released for f in m["fields"]} | ({"cases"} if any(m["cases"] for m in released)
                                                                     else set())),
        overrides=sorted(overridden),
    )


def _project(member: dict[str, Any], purpose: Purpose, purpose_name: str, pseudonymiser: Pseudonymiser | None,
             permitted: frozenset[str] | None, denied: frozenset[str]) -> dict[str, Any]:
    """The member reduced to the purpose's fields, kept only where a field-naming permit covers them
    (``permitted``) and no objection does (``denied``); pseudonymised references where the purpose
    says so."""
    person = member.get("person") or {}
    hide: Callable[[str, str], str] = (
        (lambda kind, value: pseudonymiser.pseudonym(purpose_name, kind, value))  # type: ignore[union-attr]
        if purpose.pseudonymise else (lambda kind, value: value))

    def allowed(key: str) -> bool:
        return ((permitted is None or any(covers_field(f, key) for f in permitted))
                and not any(covers_field(f, key) for f in denied))

    record_key = f"{member['agency']}:{member['source_record_id']}"
    values: dict[str, str] = {}
    for name in purpose.fields:
        for key, value in _field_values(person, name):
            if value and allowed(key):
                values[key] = value
    cases = []
    if "cases" in purpose.fields and allowed("cases"):
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
