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
from functools import lru_cache, partial
from typing import Any

from caselink.linkage.standardise import standardise_postcode
from caselink.streams.consent.policy import SENSITIVITY_ORDER, Policy, Purpose, covers_field
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

    def legacy_digest(self) -> str:
        """The digest bookkeeping written before views were digested from their Avro bytes
        (``gated_codec``) recorded: compared only with such bookkeeping, so that an upgrade does
        not release every view again."""
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


# ---------------------------------------------------------------------------- projection
# What each policy field takes from a record's person; empty values are dropped by the caller. One
# reader per field, chosen once per purpose (``PurposeRules``): interpreting the field name on
# every record was a fifth of an evaluation. A field is (key, read): ``read`` None takes the
# person's attribute ``key`` as it is; else ``read(person)`` is the value; for ``identifiers``,
# whose keys are its schemes, key is None and ``read`` gives (key, value) pairs.
Reader = Callable[[dict[str, Any]], Any]
FieldRead = tuple[str | None, Reader | None]


def _joined(name: str) -> Reader:
    return lambda person: ", ".join(person.get(name) or ())


def _first_address(person: dict[str, Any]) -> dict[str, Any]:
    addresses = person.get("addresses")
    return addresses[0] if addresses else {}


@lru_cache(maxsize=65536)
def _district(postcode: str) -> str | None:
    standard = standardise_postcode(postcode)
    return standard.district if standard else None


def _year_of_birth(person: dict[str, Any]) -> Any:
    dob = person.get("date_of_birth")
    return dob[:4] if dob and len(dob) >= 4 else None


def _postcode(person: dict[str, Any]) -> Any:
    return _first_address(person).get("postcode")


def _postcode_district(person: dict[str, Any]) -> Any:
    postcode = _first_address(person).get("postcode")
    return _district(postcode) if postcode else None


def _address(person: dict[str, Any]) -> Any:
    addresses = person.get("addresses")
    if not addresses:
        return None
    if len(addresses) == 1:
        return _address_text(addresses[0])
    return " | ".join([_address_text(a) for a in addresses])


_SCHEME_KEYS: dict[str, str] = {}


def _identifiers(person: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    found = person.get("identifiers")
    if not found:
        return ()
    keys = _SCHEME_KEYS
    return [(keys.get(s) or keys.setdefault(s, f"identifiers.{s}"), v)
            for s, v in (sorted(found.items()) if len(found) > 1 else found.items())]


def _identifier(name: str) -> Reader:
    scheme = name.split(".", 1)[1]
    return lambda person: (person.get("identifiers") or {}).get(scheme)


def _field_read(name: str) -> FieldRead | None:
    match name:
        case "given_names" | "family_name" | "date_of_birth" | "sex":
            return name, None
        case "other_names" | "phones" | "emails":
            return name, _joined(name)
        case "year_of_birth":
            return name, _year_of_birth
        case "postcode":
            return name, _postcode
        case "postcode_district":
            return name, _postcode_district
        case "address":
            return name, _address
        case "identifiers":
            return None, _identifiers
        case _ if name.startswith("identifiers."):
            return name, _identifier(name)
    return None  # "cases" is not a person field


def _address_text(address: dict[str, Any]) -> str:
    return ", ".join(filter(None, (*(address.get("lines") or ()), address.get("locality"), address.get("region"),
                                   address.get("postcode"), address.get("country"))))


class PurposeRules:
    """One purpose's decisions that depend only on the policy, taken once when it loads."""

    def __init__(self, name: str, purpose: Purpose) -> None:
        self.name = name
        self.purpose = purpose
        self.every_agency = "*" in purpose.agencies
        self.agencies = frozenset(purpose.agencies)
        self.required = purpose.consent == "required"
        self.reads = [r for r in map(_field_read, purpose.fields) if r is not None]
        self.cases = "cases" in purpose.fields
        most = SENSITIVITY_ORDER[purpose.max_sensitivity]
        self.sensitivities = frozenset(level for level, rank in SENSITIVITY_ORDER.items() if rank <= most)
        self.plain_basis = compose_basis(purpose.legal_basis, self.required, {})

    def allows_case(self, case: dict[str, Any]) -> bool:
        sensitivity = case.get("sensitivity") or "normal"
        return sensitivity in self.sensitivities or sensitivity.lower() in self.sensitivities

    def project(self, member: dict[str, Any], hide: Callable[[str, str], str] | None,
                permitted: frozenset[str] | None = None, denied: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The member reduced to the purpose's fields, kept only where a field-naming permit covers
        them (``permitted``) and no objection does (``denied``); references through ``hide`` (None:
        as they are)."""
        person = member.get("person") or {}
        values: dict[str, str] = {}
        for key, read in self.reads:
            if key is None:  # identifiers: (key, value) pairs, a key per scheme
                for each, value in read(person):  # type: ignore[misc]  # never None with no key
                    if value and each not in values:
                        values[each] = value
                continue
            value = person.get(key) if read is None else read(person)
            if value and key not in values:
                values[key] = value
        filtered = permitted is not None or denied
        if filtered:
            values = {k: v for k, v in values.items() if _allowed(k, permitted, denied)}
        agency = member["agency"]
        cases = []
        if self.cases and (not filtered or _allowed("cases", permitted, denied)):
            sensitivities = self.sensitivities
            for case in member.get("cases") or ():
                sensitivity = case.get("sensitivity") or "normal"
                if sensitivity in sensitivities or sensitivity.lower() in sensitivities:
                    cases.append({**case, "case_id": hide("case", f"{agency}:{case['case_id']}")}
                                 if hide is not None else {**case})
        record = f"{agency}:{member['source_record_id']}"
        return {"agency": agency, "record_ref": hide("record", record) if hide is not None else record,
                "fields": values, "cases": cases}


def _allowed(key: str, permitted: frozenset[str] | None, denied: frozenset[str]) -> bool:
    return ((permitted is None or any(covers_field(f, key) for f in permitted))
            and not any(covers_field(f, key) for f in denied))


_RULES: dict[int, tuple[Policy, dict[str, PurposeRules]]] = {}


def rules_of(policy: Policy) -> dict[str, PurposeRules]:
    """Every purpose's rules, made once per policy object (a new policy file is a new object)."""
    held = _RULES.get(id(policy))
    if held is None or held[0] is not policy:
        if len(_RULES) > 8:
            _RULES.clear()
        held = _RULES[id(policy)] = (policy, {n: PurposeRules(n, p) for n, p in policy.purposes.items()})
    return held[1]


# ---------------------------------------------------------------------------- the decision
def evaluate(case: dict[str, Any], purpose_name: str, policy: Policy | None, provisions: list[Provision],
             now: datetime, pseudonymiser: Pseudonymiser | None) -> View | Refusal:
    if policy is None:
        return Refusal("no valid policy loaded")
    rules = rules_of(policy).get(purpose_name)
    if rules is None:
        return Refusal(f"purpose {purpose_name} is not in policy {policy.version}")
    purpose = rules.purpose
    if purpose.pseudonymise and pseudonymiser is None:
        return Refusal("pseudonymised purpose but no pseudonymisation key is configured")
    hide: Callable[[str, str], str] | None = (
        partial(pseudonymiser.pseudonym, purpose_name)  # type: ignore[union-attr]
        if purpose.pseudonymise else None)  # None: references as they are
    members = case["members"]
    # National opt-outs count only for purposes they apply to.
    active = [p for p in provisions if p.purpose in ("*", purpose_name)
              and (not p.national_opt_out or purpose.national_opt_out) and p.active(now)] if provisions else []
    overridden: dict[str, str] = {}
    released: list[dict[str, Any]] = []
    reasons: list[str] = []
    several = len(members) > 1
    for m in members:
        agency = m["agency"]
        if not rules.every_agency and agency not in rules.agencies:
            continue
        if several and m["match_weight"] < purpose.min_match_weight:
            reasons.append(f"{agency} record linked below match weight {purpose.min_match_weight}")
            continue
        if not active:  # the usual case: no consent recorded about this citizen for this purpose
            if rules.required:
                reasons.append(f"no consent recorded for {agency} records")
                continue
            released.append(rules.project(m, hide))
            continue
        covering = [p for p in active if not p.agencies or agency in p.agencies]
        own = member_subjects(m) if any(p.permit for p in covering) else set()
        permits = [p for p in covering if p.permit and (p.subject.startswith("citizen:") or p.subject in own)]
        refusals = [p for p in covering if not p.permit]
        whole = [p for p in refusals if not p.fields or p.national_opt_out]  # an opt-out is always whole
        permitted: frozenset[str] | None = None  # None: every field of the purpose
        denied: frozenset[str] = frozenset()
        if rules.required:
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
        released.append(rules.project(m, hide, permitted, denied))
    if not released:
        return Refusal("; ".join(dict.fromkeys(reasons)) or "no records of an agency this purpose may receive")
    basis = compose_basis(purpose.legal_basis, rules.required, overridden) if overridden else rules.plain_basis
    if len(released) > 1:
        released.sort(key=lambda m: (m["agency"], m["record_ref"]))
        keys = {k for m in released for k in m["fields"]}
        if any(m["cases"] for m in released):
            keys.add("cases")
        fields, agencies = sorted(keys), sorted({m["agency"] for m in released})
    else:  # one record: its fields ("cases" is never a field's key)
        only = released[0]
        fields, agencies = sorted([*only["fields"], "cases"] if only["cases"] else only["fields"]), [only["agency"]]
    citizen_id = case["citizen_id"]
    return View(
        citizen_id=citizen_id, citizen_ref=hide("citizen", citizen_id) if hide else citizen_id, purpose=purpose_name,
        basis=basis, pseudonymised=purpose.pseudonymise,
        key_id=pseudonymiser.key_id if purpose.pseudonymise and pseudonymiser else None, members=released,
        agencies=agencies, fields=fields, overrides=sorted(overridden) if overridden else [],
    )
