"""A reference consent gate, written from docs/policy-language.md alone, to check the real one.

It shares no code with ``caselink.streams.consent``: it reads the policy as the plain mapping a
policy file holds, consents as ConsentEvent dicts in arrival order, and linked cases as LinkedCase
dicts, and says what each purpose topic should hold: ``(purpose, key) -> GatedCase`` without its
``policy_version`` and ``released_at``. It is deliberately slow and literal (every rule is a
sentence of the documentation, cited beside it), so that a disagreement with the gate is a
disagreement about the documented behaviour, not about an optimisation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime
from typing import Any

DIRECT = {"given_names", "family_name", "other_names", "date_of_birth", "identifiers", "address", "postcode",
          "phones", "emails"}
QUASI = {"year_of_birth", "sex", "postcode_district", "cases"}
SENSITIVITY = ["normal", "restricted", "sealed"]
# "A field named in a consent covers the fields derived from it"
DERIVED = {"date_of_birth": {"year_of_birth"}, "address": {"postcode", "postcode_district"},
           "postcode": {"postcode_district"}}
UK_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def known_field(name: str) -> bool:
    return name in DIRECT or name in QUASI or bool(re.fullmatch(r"identifiers\.[a-z][a-z0-9_]*", name))


def pseudonym(key: bytes, key_id: str, purpose: str, kind: str, value: str) -> str:
    """"the first 20 bytes (160 bits) of HMAC-SHA256 under the pseudonymisation key of
    <purpose>\\x1f<kind>\\x1f<value>, written in lower-case RFC 4648 base32"."""
    mac = hmac.new(key, "\x1f".join((purpose, kind, value)).encode(), hashlib.sha256).digest()
    return f"{key_id}.{base64.b32encode(mac[:20]).decode().lower()}"


def same_identifier(a: str, b: str) -> bool:
    """"Values match whatever their spacing, hyphens and case"."""
    def norm(v: str) -> str:
        return "".join(c for c in v if not c.isspace() and c != "-").upper()
    return norm(a) == norm(b)


def covers(named: str, key: str) -> bool:
    return named == key or key in DERIVED.get(named, set()) or (named == "identifiers"
                                                                and key.startswith("identifiers."))


def valid(event: dict[str, Any], purposes: dict[str, Any]) -> bool:
    """The malformed consents the documentation lists, which "change nothing"."""
    s = event["subject"]
    need = {"CITIZEN": ["citizen_id"], "RECORD": ["agency", "source_record_id"], "IDENTIFIER": ["scheme", "value"]}
    if not event["consent_id"] or any(not s.get(n) for n in need[s["kind"]]):
        return False
    if event["purpose"] != "*" and event["purpose"] not in purposes:
        return False
    if event["national_opt_out"] and (event["decision"] != "DENY" or event["fields"]):
        return False
    if any(not known_field(f) for f in event["fields"]):
        return False
    return not (event["valid_from"] and event["valid_to"] and event["valid_to"] <= event["valid_from"])


def consents_in_force(events: list[dict[str, Any]], purposes: dict[str, Any], now: datetime) -> list[dict]:
    """"the latest wins, whatever order they arrive in; of two with the same recorded_at, the one
    that arrived last"; WITHDRAWN removes it; "valid_from inclusive, valid_to exclusive"."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        if not valid(event, purposes):
            continue
        held = latest.get(event["consent_id"])
        if held is None or event["recorded_at"] >= held["recorded_at"]:
            latest[event["consent_id"]] = event
    return [e for e in latest.values() if e["status"] == "ACTIVE"
            and (e["valid_from"] is None or e["valid_from"] <= now) and (e["valid_to"] is None or now < e["valid_to"])]


def field_values(person: dict[str, Any], name: str) -> dict[str, str]:
    """The "Fields" table: what flows for one purpose field, under its key; empty values left out."""
    addresses = person.get("addresses") or []
    out: dict[str, str | None] = {}
    if name in ("given_names", "family_name", "date_of_birth", "sex"):
        out[name] = person.get(name)
    elif name in ("other_names", "phones", "emails"):
        out[name] = ", ".join(person.get(name) or [])
    elif name == "identifiers":
        out = {f"identifiers.{s}": v for s, v in (person.get("identifiers") or {}).items()}
    elif name.startswith("identifiers."):
        out[name] = (person.get("identifiers") or {}).get(name.split(".", 1)[1])
    elif name == "address":
        texts = []
        for a in addresses:
            parts = [*(a.get("lines") or []), a.get("locality"), a.get("region"), a.get("postcode"), a.get("country")]
            texts.append(", ".join(p for p in parts if p))
        out[name] = " | ".join(texts)
    elif name == "postcode":
        out[name] = addresses[0].get("postcode") if addresses else None
    elif name == "year_of_birth":
        dob = person.get("date_of_birth")
        out[name] = dob[:4] if dob and len(dob) >= 4 else None
    elif name == "postcode_district":
        code = "".join((addresses[0].get("postcode") or "").split()).upper() if addresses else ""
        m = UK_POSTCODE.match(code)
        out[name] = m.group(1) if m else None
    return {k: v for k, v in out.items() if v}


def ancestors(citizen_id: str, survivor_of: dict[str, str]) -> set[str]:
    """Retired ids whose consents follow into ``citizen_id``: "the survivor, and the survivor's survivor"."""
    found = set()
    changed = True
    while changed:
        changed = False
        for retired, survivor in survivor_of.items():
            if retired not in found and (survivor == citizen_id or survivor in found):
                found.add(retired)
                changed = True
    return found


def reference_views(policy: dict[str, Any], cases: dict[str, dict[str, Any]], survivor_of: dict[str, str],
                    events: list[dict[str, Any]], now: datetime, key: bytes | None,
                    key_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """What each purpose topic holds: ``(purpose, citizen_ref) -> GatedCase`` fields that the gate decides."""
    purposes: dict[str, dict[str, Any]] = policy["purposes"]
    in_force = consents_in_force(events, purposes, now)
    topics: dict[tuple[str, str], dict[str, Any]] = {}
    for purpose_name, purpose in purposes.items():
        pseudo = purpose.get("pseudonymise", False)
        if pseudo and key is None:
            continue  # "a pseudonymised purpose without a key releases nothing"
        for citizen_id, case in cases.items():
            view = _view(purpose_name, purpose, citizen_id, case, survivor_of, in_force, key, key_id)
            if view is not None:
                topics[(purpose_name, view["citizen_ref"])] = view
    return topics


def _view(purpose_name: str, purpose: dict[str, Any], citizen_id: str, case: dict[str, Any],
          survivor_of: dict[str, str], in_force: list[dict[str, Any]], key: bytes | None,
          key_id: str) -> dict[str, Any] | None:
    pseudo = purpose.get("pseudonymise", False)

    def ref(kind: str, value: str) -> str:
        return pseudonym(key, key_id, purpose_name, kind, value) if pseudo and key is not None else value

    members = case["members"]
    my_ids = {citizen_id} | ancestors(citizen_id, survivor_of)

    def names(consent: dict[str, Any], m: dict[str, Any]) -> bool:
        """Whether the consent's subject is this record (its record, or an identifier it carries)."""
        s = consent["subject"]
        if s["kind"] == "RECORD":
            return (s["agency"], s["source_record_id"]) == (m["agency"], m["source_record_id"])
        if s["kind"] == "IDENTIFIER":
            value = ((m.get("person") or {}).get("identifiers") or {}).get(s["scheme"])
            return bool(value) and same_identifier(value, s["value"])
        return False

    def about_citizen(consent: dict[str, Any]) -> bool:
        s = consent["subject"]
        if s["kind"] == "CITIZEN":
            return s["citizen_id"] in my_ids
        return any(names(consent, m) for m in members)

    # "the consents that count are those in force now, for this purpose or *, about the citizen";
    # "national opt-outs count only where the purpose has national_opt_out: true".
    counting = [c for c in in_force if c["purpose"] in ("*", purpose_name) and about_citizen(c)
                and (not c["national_opt_out"] or purpose["national_opt_out"])]
    overridden: dict[str, str] = {}
    released = []
    for m in members:
        agencies = purpose["agencies"]
        if "*" not in agencies and m["agency"] not in agencies:
            continue
        if len(members) > 1 and m["match_weight"] < purpose.get("min_match_weight", 0.0):
            continue
        actor = [c for c in counting if not c["agencies"] or m["agency"] in c["agencies"]]
        refusals = [c for c in actor if c["decision"] == "DENY"]  # "reaches every record of the citizen"
        permits = [c for c in actor if c["decision"] == "PERMIT"
                   and (c["subject"]["kind"] == "CITIZEN" or names(c, m))]
        permitted: set[str] | None = None
        if purpose["consent"] == "required":
            if not permits:
                continue
            if all(c["fields"] for c in permits):
                permitted = {f for c in permits for f in c["fields"]}
        denied: set[str] = set()
        if purpose.get("statutory_override", False):
            for c in refusals:
                kind = ("national opt-out" if c["national_opt_out"] else
                        f"objection to {', '.join(sorted(c['fields']))}" if c["fields"] else "objection")
                overridden[c["consent_id"]] = kind
        elif any(c["national_opt_out"] or not c["fields"] for c in refusals):
            continue
        else:
            denied = {f for c in refusals for f in c["fields"]}

        def allowed(k: str, permitted: set[str] | None = permitted, denied: set[str] = denied) -> bool:
            return ((permitted is None or any(covers(f, k) for f in permitted))
                    and not any(covers(f, k) for f in denied))

        values: dict[str, str] = {}
        for name in purpose["fields"]:
            values.update({k: v for k, v in field_values(m.get("person") or {}, name).items() if allowed(k)})
        cases = []
        if "cases" in purpose["fields"] and allowed("cases"):
            most = SENSITIVITY.index(purpose.get("max_sensitivity", "normal"))
            for c in m.get("cases") or []:
                level = c.get("sensitivity") or "normal"
                if level in SENSITIVITY and SENSITIVITY.index(level) <= most:
                    cases.append({**c, "case_id": ref("case", f"{m['agency']}:{c['case_id']}") if pseudo
                                  else c["case_id"]})
        released.append({"agency": m["agency"], "record_ref": ref("record", f"{m['agency']}:{m['source_record_id']}"),
                         "fields": values, "cases": cases})
    if not released:
        return None
    phrases = [p.strip() for p in purpose["legal_basis"].split(";") if p.strip()]
    if purpose["consent"] == "required":
        phrases.append("explicit consent")
    if overridden:
        phrases.append("statutory basis overrides recorded refusals: "
                       + ", ".join(f"{cid} ({kind})" for cid, kind in sorted(overridden.items())))
    basis: list[str] = []
    for p in phrases:
        if p.casefold() not in [b.casefold() for b in basis]:
            basis.append(p)
    return {"citizen_ref": ref("citizen", citizen_id), "purpose": purpose_name, "basis": "; ".join(basis),
            "pseudonymised": pseudo, "key_id": key_id if pseudo else None,
            "members": sorted(released, key=lambda r: (r["agency"], r["record_ref"]))}
