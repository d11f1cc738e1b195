"""Consent state: every recorded consent, objection and opt-out, and which citizens it is about.

A consent is about a citizen id, an agency record, or an identifier (an NHS number, say). It is
stored under that subject and found again when a citizen is evaluated, so consent about a record
follows the record into whichever citizen holds it now, through merges and splits, and consent
about a retired citizen id follows it into its survivor. Events carrying the same ``consent_id``
replace each other by ``recorded_at`` (later wins, ties by arrival), so redelivery and
out-of-order delivery converge; ``status: WITHDRAWN`` removes a consent.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from caselink.streams.consent.policy import Policy, is_known_field

SCHEME = re.compile(r"^[a-z][a-z0-9_]*$")


class ConsentRejected(ValueError):
    """A consent event that is malformed or contradicts the policy; it changes nothing."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


_SEPARATORS = re.compile(r"[\s\-]")


def identifier_value(value: str) -> str:
    """Identifiers match whatever the spacing and case: '943 476 5919' == '9434765919'."""
    if value.isalnum():  # the usual case: nothing to take out (no regex, a third of the time)
        return value.upper()
    return _SEPARATORS.sub("", value).upper()


def subject_key(subject: dict[str, Any]) -> str:
    kind = subject["kind"]
    if kind == "CITIZEN":
        return f"citizen:{subject['citizen_id']}"
    if kind == "RECORD":
        return f"record:{subject['agency']}:{subject['source_record_id']}"
    return f"identifier:{subject['scheme']}:{identifier_value(subject['value'])}"


@dataclass(frozen=True)
class Provision:
    """One consent as the evaluator needs it."""

    consent_id: str
    subject: str
    purpose: str  # a purpose name or "*"
    permit: bool
    national_opt_out: bool
    agencies: frozenset[str]  # empty: every agency
    fields: frozenset[str]  # empty: every field
    basis: str | None
    valid_from: datetime | None
    valid_to: datetime | None
    recorded_at: datetime

    def active(self, now: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= now) and (self.valid_to is None or now < self.valid_to)

    def covers(self, purpose: str, agency: str) -> bool:
        return self.purpose in ("*", purpose) and (not self.agencies or agency in self.agencies)


def validate_consent(event: dict[str, Any], policy: Policy | None) -> list[str]:
    """Everything wrong with a decoded ConsentEvent; empty when it may be applied."""
    problems: list[str] = []
    if not event.get("consent_id"):
        problems.append("consent_id is empty")
    subject = event.get("subject") or {}
    kind: str = subject.get("kind") or ""
    needs = {"CITIZEN": ("citizen_id",), "RECORD": ("agency", "source_record_id"),
             "IDENTIFIER": ("scheme", "value")}.get(kind, ())
    for name in needs:
        if not subject.get(name):
            problems.append(f"subject.{name} is required for a {kind} subject")
    if kind == "IDENTIFIER" and subject.get("scheme") and not SCHEME.match(subject["scheme"]):
        problems.append(f"subject.scheme {subject['scheme']!r} is not a scheme name (lower-case, digits, _)")
    purpose = event.get("purpose")
    if not purpose:
        problems.append("purpose is empty")
    elif purpose != "*" and policy is not None and purpose not in policy.purposes:
        problems.append(f"purpose {purpose!r} is not in policy {policy.version} "
                        f"(known: {', '.join(sorted(policy.purposes))}, or *)")
    if event.get("national_opt_out") and event.get("decision") != "DENY":
        problems.append("a national opt-out must have decision DENY")
    if event.get("national_opt_out") and event.get("fields"):
        problems.append("a national opt-out is always whole: it may not name fields")
    unknown = [f for f in event.get("fields") or [] if not is_known_field(f)]
    if unknown:
        problems.append(f"fields {unknown} are not policy field names")
    start, end = event.get("valid_from"), event.get("valid_to")
    if start is not None and end is not None and end <= start:
        problems.append("valid_to is not after valid_from")
    return problems


def provision_of(event: dict[str, Any]) -> Provision:
    return Provision(
        consent_id=event["consent_id"],
        subject=subject_key(event["subject"]),
        purpose=event["purpose"],
        permit=event["decision"] == "PERMIT",
        national_opt_out=bool(event.get("national_opt_out")),
        agencies=frozenset(event.get("agencies") or ()),
        fields=frozenset(event.get("fields") or ()),
        basis=event.get("basis"),
        valid_from=_utc(event.get("valid_from")),
        valid_to=_utc(event.get("valid_to")),
        recorded_at=_utc(event["recorded_at"]) or datetime.now(UTC),
    )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ConsentChange:
    """What applying a consent event changed: the subjects it was or is about, and the purposes it
    was or is for (None: ``*``, every purpose)."""

    subjects: frozenset[str]
    purposes: frozenset[str] | None


class ConsentRegister:
    """Provisions by consent id and by subject. Plain data: rebuilt by replaying consent topics."""

    def __init__(self) -> None:
        self.by_id: dict[str, Provision] = {}
        self.withdrawn: dict[str, datetime] = {}  # consent id -> when, so an older ACTIVE cannot revive it
        self.by_subject: dict[str, dict[str, Provision]] = {}
        # (moment, consent id, recorded_at) for every start and end of a period, earliest first: the
        # gate asks every second which consents started or ended, and a scan of every consent was
        # as long as the register.
        self._bounds: list[tuple[datetime, str, datetime]] = []

    def apply(self, event: dict[str, Any], policy: Policy | None) -> ConsentChange:
        """Apply one ConsentEvent; what changed (no subjects for a stale one).

        Raises ``ConsentRejected`` (changing nothing) when the event is malformed.
        """
        problems = validate_consent(event, policy)
        if problems:
            raise ConsentRejected(problems)
        new = provision_of(event)
        old = self.by_id.get(new.consent_id)
        gone = self.withdrawn.get(new.consent_id)
        newest = max([t for t in (old.recorded_at if old else None, gone) if t is not None], default=None)
        if newest is not None and new.recorded_at < newest:
            return ConsentChange(frozenset(), frozenset())  # an older version arriving late
        subjects = {new.subject}
        purposes = {new.purpose}
        if old is not None:
            self._remove(old)
            subjects.add(old.subject)
            purposes.add(old.purpose)
        change = ConsentChange(frozenset(subjects), None if "*" in purposes else frozenset(purposes))
        if event.get("status") == "WITHDRAWN":
            self.withdrawn[new.consent_id] = new.recorded_at
            return change
        self.withdrawn.pop(new.consent_id, None)
        self.by_id[new.consent_id] = new
        self.by_subject.setdefault(new.subject, {})[new.consent_id] = new
        for bound in (new.valid_from, new.valid_to):
            if bound is not None:
                heapq.heappush(self._bounds, (bound, new.consent_id, new.recorded_at))
        return change

    def _remove(self, provision: Provision) -> None:
        del self.by_id[provision.consent_id]
        held = self.by_subject.get(provision.subject, {})
        held.pop(provision.consent_id, None)
        if not held:
            self.by_subject.pop(provision.subject, None)

    def about(self, subjects: Iterable[str]) -> list[Provision]:
        found: list[Provision] = []
        for subject in subjects:
            held = self.by_subject.get(subject)
            if held:
                found.extend(held.values())
        return found

    def boundaries_between(self, after: datetime, until: datetime) -> list[tuple[str, str]]:
        """(subject, purpose) of the consents in force whose period starts or ends in (after, until]:
        their citizens need evaluating again for that purpose. Bounds up to ``until`` are used up."""
        due: list[tuple[str, str]] = []
        while self._bounds and self._bounds[0][0] <= until:
            bound, consent_id, recorded_at = heapq.heappop(self._bounds)
            provision = self.by_id.get(consent_id)
            if bound > after and provision is not None and provision.recorded_at == recorded_at:
                due.append((provision.subject, provision.purpose))
        return due
