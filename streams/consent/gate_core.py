"""The gate's state and decisions between Kafka messages: inputs in, messages to publish out.

It holds the latest LinkedCase of every citizen, the consent register and what has been
released to each purpose topic. Any input marks the citizens it may affect as dirty, with the
purposes it may affect (``affected``: a corrected name cannot change a purpose that does not take
names; a consent for research cannot change planning); ``flush`` evaluates each dirty citizen for
those purposes and publishes the difference from what was released before: a new or corrected
view, or a tombstone (retraction), each with its audit record on ``caselink.disclosures`` and its
bookkeeping on the compacted ``caselink.gate-released``. Publishing only differences makes the
gate idempotent: replaying its inputs changes nothing.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from caselink.infra.topics import DISCLOSURES_TOPIC, GATE_RELEASED_TOPIC, LINKED_CASES_TOPIC, purpose_topic
from caselink.schemas import SchemaValidationError, UndecodableEventError, default_serde
from caselink.streams.consent.affected import affected_purposes, readers
from caselink.streams.consent.evaluate import Refusal, View, evaluate, subjects_of
from caselink.streams.consent.gated_codec import DIGEST_PREFIX, DisclosureCodec, GatedCodec
from caselink.streams.consent.policy import Policy
from caselink.streams.consent.pseudonym import Pseudonymiser
from caselink.streams.consent.register import ConsentRegister, ConsentRejected, Provision
from caselink.streams.linker_core import Outgoing

_json = encode_basestring_ascii  # a str as a JSON string


_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_VERSION_4 = (4 << 76) | (0x8000 << 48)


class _Ids:
    """Random UUIDs (version 4) for disclosures, from a generator seeded by the OS once per process:
    ``uuid.uuid4()`` asks the OS for 16 bytes every time, 5% of the live gate's samples. The ids
    need to be unique, not secret. A forked child reseeds (``os.register_at_fork``, rather than
    a system call on every id to see whether the process is still the same)."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._random.seed(os.urandom(32))

    def __call__(self) -> str:
        # What ``str(uuid.UUID(int=..., version=4))`` writes, without making the UUID object.
        h = "%032x" % (self._random.getrandbits(128) & _CLEAR | _VERSION_4)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


disclosure_id = _Ids()

# What a bad input message raises from ``GateCore.apply_input`` (it changes nothing).
INPUT_ERRORS = (UndecodableEventError, SchemaValidationError, ConsentRejected, ValueError, AttributeError)


_DUMPED: dict[tuple[Any, ...], str] = {}  # Released.dump's text after the digest, for recent values


class Released(NamedTuple):
    """What is out for one purpose and citizen. A named tuple: one is made for every release and
    kept for every view that is out (a frozen dataclass took 2.1 µs to make, this 0.7)."""

    ref: str
    digest: str
    agencies: tuple[str, ...]
    fields: tuple[str, ...]
    basis: str
    policy: str
    overrides: tuple[str, ...] = ()  # consent ids the basis overrode (absent in bookkeeping before they were kept)

    def dump(self) -> bytes:
        """A JSON list, in field order, written directly (``json.dumps`` of a sorted object, as
        before, took 6 µs of each release; this 2.5, and 1 with the part after the digest, which
        most releases share with others, remembered)."""
        key = self[2:]  # agencies, fields, basis, policy, overrides
        rest = _DUMPED.get(key)
        if rest is None:
            rest = (f",[{','.join(map(_json, self.agencies))}],[{','.join(map(_json, self.fields))}],"
                    f"{_json(self.basis)},{_json(self.policy)},[{','.join(map(_json, self.overrides))}]]")
            if len(_DUMPED) >= 1024:
                _DUMPED.clear()
            _DUMPED[key] = rest
        return f"[{_json(self.ref)},{_json(self.digest)}{rest}".encode()

    @classmethod
    def load(cls, data: bytes) -> Released:
        raw = json.loads(data)
        if isinstance(raw, list):
            ref, digest, agencies, fields, basis, policy, overrides = raw
            return cls(ref, digest, tuple(agencies), tuple(fields), basis, policy, tuple(overrides))
        return cls(raw["ref"], raw["digest"], tuple(raw["agencies"]), tuple(raw["fields"]), raw["basis"],
                   raw["policy"], tuple(raw.get("overrides", ())))  # bookkeeping written before


class GateCore:
    def __init__(self, policy: Policy | None, pseudonymiser: Pseudonymiser | None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.policy = policy
        self.pseudonymiser = pseudonymiser
        self.clock = clock
        self.serde = default_serde()
        self.codec = GatedCodec(self.serde)
        self.disclosures = DisclosureCodec(self.serde)
        self.register = ConsentRegister()
        self.cases: dict[str, dict[str, Any]] = {}
        self.subjects: dict[str, set[str]] = {}  # citizen id -> subject keys of its current case
        self.owners: dict[str, set[str]] = {}  # subject key -> citizen ids holding it
        self.merged_into: dict[str, str] = {}  # retired citizen id -> the citizen it merged into
        self.absorbed: dict[str, set[str]] = {}  # the reverse: citizen id -> ids merged into it
        self.released: dict[tuple[str, str], Released] = {}  # (purpose, citizen id) -> what is out
        self.released_purposes: dict[str, set[str]] = {}  # citizen id -> purposes with a release
        # citizen id -> the purposes to evaluate it for at the next flush (None: every purpose)
        self.dirty: dict[str, frozenset[str] | None] = {}
        self.read_by = readers(policy) if policy else {}
        self.stats = {"releases": 0, "retractions": 0, "unchanged": 0, "consents": 0, "rejected": 0,
                      "evaluations": 0}

    def mark(self, citizen_id: str, purposes: frozenset[str] | None = None) -> None:
        """Evaluate ``citizen_id`` again at the next flush, for ``purposes`` (None: all)."""
        if citizen_id not in self.dirty:
            self.dirty[citizen_id] = purposes
            return
        held = self.dirty[citizen_id]
        if held is not None:
            self.dirty[citizen_id] = None if purposes is None else held | purposes

    # ------------------------------------------------------------------ inputs
    def load_released(self, key: bytes, value: bytes | None) -> None:
        """Bootstrap from ``caselink.gate-released``: what earlier runs put on the purpose topics."""
        purpose, citizen_id = key.decode().split("|", 1)
        if value is None:
            self.released.pop((purpose, citizen_id), None)
            self.released_purposes.get(citizen_id, set()).discard(purpose)
        else:
            self.released[(purpose, citizen_id)] = Released.load(value)
            self.released_purposes.setdefault(citizen_id, set()).add(purpose)
        self.mark(citizen_id)

    def apply_linked_case(self, citizen_id: str, value: bytes | None, topic: str | None = None,
                          partition: int | None = None, offset: int | None = None) -> None:
        """A citizen's new case (None: retired). A message that cannot be decoded raises and changes
        nothing."""
        case = None
        if value is not None:
            _, case = self.serde.decode(value, expect="LinkedCase", topic=topic, partition=partition, offset=offset)
        before = self.cases.pop(citizen_id, None)
        old = self.subjects.get(citizen_id, set())
        purposes = affected_purposes(before, case, self.read_by) if self.policy else None
        grew = False
        if case is None:
            self._set_subjects(citizen_id, set())
        else:
            self.cases[citizen_id] = case
            for retired in case["merged_from"]:
                self.merged_into[retired] = citizen_id
                absorbed = self.absorbed.setdefault(citizen_id, set())
                grew = grew or retired not in absorbed
                absorbed.add(retired)
            # Same records, identifiers and merges (purposes not None): the same subjects as before.
            self._set_subjects(citizen_id, old if purposes is not None else
                               subjects_of(case, self.ancestry(citizen_id)))
        self.mark(citizen_id, purposes)
        if grew:
            self._ancestry_grew(citizen_id)

    def _set_subjects(self, citizen_id: str, subjects: set[str]) -> None:
        old = self.subjects.pop(citizen_id, set())
        if subjects:
            self.subjects[citizen_id] = subjects
        if subjects == old:  # usually: a record's details changed, not which records or identifiers
            return
        for subject in old - subjects:
            holders = self.owners.get(subject)
            if holders is not None:
                holders.discard(citizen_id)
                if not holders:
                    del self.owners[subject]
        for subject in subjects - old:
            self.owners.setdefault(subject, set()).add(citizen_id)

    def _ancestry_grew(self, citizen_id: str) -> None:
        """``citizen_id`` absorbed ids it had not before. Citizens it was itself merged into (read
        earlier: the linked cases' partitions replay in no particular order relative to each other)
        inherit those ids too, with the consents recorded about them."""
        seen = {citizen_id}
        survivor = self.merged_into.get(citizen_id)
        while survivor is not None and survivor not in seen:
            seen.add(survivor)
            case = self.cases.get(survivor)
            if case is not None:
                self._set_subjects(survivor, subjects_of(case, self.ancestry(survivor)))
                self.mark(survivor)
            survivor = self.merged_into.get(survivor)

    def apply_input(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                    offset: int | None = None) -> None:
        """One message from the gate's inputs: a linked case, or a consent from a consent topic.

        Raises one of ``INPUT_ERRORS`` for a message that cannot be applied.
        """
        if topic == LINKED_CASES_TOPIC:
            self.apply_linked_case(key.decode(), value, topic, partition, offset)  # type: ignore[union-attr]
            return
        _, event = self.serde.decode(value, expect="ConsentEvent", topic=topic, partition=partition, offset=offset)
        self.apply_consent(event)

    def apply_consent(self, event: dict[str, Any]) -> None:
        """Apply a decoded ConsentEvent; raises ``ConsentRejected`` and changes nothing if it is bad."""
        change = self.register.apply(event, self.policy)
        for subject in change.subjects:
            for citizen_id in self.citizens_about(subject):
                self.mark(citizen_id, change.purposes)
        self.stats["consents"] += 1

    def set_policy(self, policy: Policy | None) -> None:
        """A new policy (or None: the file is broken, release nothing) re-evaluates everyone."""
        self.policy = policy
        self.read_by = readers(policy) if policy else {}
        for citizen_id in (*self.cases, *self.released_purposes):
            self.mark(citizen_id)

    def set_pseudonymiser(self, pseudonymiser: Pseudonymiser | None) -> None:
        self.pseudonymiser = pseudonymiser
        for citizen_id in (*self.cases, *self.released_purposes):
            self.mark(citizen_id)

    def tick(self, after: datetime, until: datetime) -> None:
        """Consents that started or expired in (after, until] change what may flow."""
        for subject, purpose in self.register.boundaries_between(after, until):
            for citizen_id in self.citizens_about(subject):
                self.mark(citizen_id, None if purpose == "*" else frozenset((purpose,)))

    def keep_only(self, owns: Callable[[str], bool]) -> None:
        """Give up the citizens ``owns`` says no to (a partitioned gate dealt fewer partitions):
        what is left is what a gate that read only the kept citizens' cases holds, with the same
        consents and bookkeeping, so giving partitions up needs no rebuild."""
        for citizen_id in [c for c in self.subjects if not owns(c)]:
            self._set_subjects(citizen_id, set())
        self.cases = {c: case for c, case in self.cases.items() if owns(c)}
        self.merged_into = {retired: c for retired, c in self.merged_into.items() if owns(c)}
        self.absorbed = {c: ids for c, ids in self.absorbed.items() if owns(c)}
        self.released = {key: out for key, out in self.released.items() if owns(key[1])}
        self.released_purposes = {c: ps for c, ps in self.released_purposes.items() if owns(c)}
        self.dirty = {c: ps for c, ps in self.dirty.items() if owns(c)}

    # ------------------------------------------------------------------ lookups
    def resolve(self, citizen_id: str) -> str:
        seen = 0
        while citizen_id in self.merged_into and citizen_id not in self.cases and seen < 1000:
            citizen_id, seen = self.merged_into[citizen_id], seen + 1
        return citizen_id

    def ancestry(self, citizen_id: str) -> set[str]:
        """Every retired id whose records now live in ``citizen_id`` (merges of merges included)."""
        found: set[str] = set()
        frontier = [citizen_id]
        while frontier:
            for retired in self.absorbed.get(frontier.pop(), ()):
                if retired not in found:
                    found.add(retired)
                    frontier.append(retired)
        return found

    def citizens_about(self, subject: str) -> set[str]:
        holders = set(self.owners.get(subject, ()))
        if subject.startswith("citizen:"):
            cid = self.resolve(subject.split(":", 1)[1])
            if cid in self.cases:
                holders.add(cid)
        return holders

    def provisions(self, citizen_id: str) -> list[Provision]:
        """Every consent recorded about the citizen, in force or not."""
        return self.register.about(self.subjects.get(citizen_id, ()))

    def decide(self, citizen_id: str, purpose: str, now: datetime | None = None,
               provisions: list[Provision] | None = None) -> View | Refusal:
        case = self.cases.get(citizen_id)
        if case is None:
            return Refusal("citizen retired (merged into another) or has no records left")
        if provisions is None:
            provisions = self.provisions(citizen_id)
        self.stats["evaluations"] += 1
        return evaluate(case, purpose, self.policy, provisions, now or self.clock(), self.pseudonymiser)

    # ------------------------------------------------------------------ output
    def flush(self) -> list[Outgoing]:
        """Evaluate every dirty citizen for its purposes; the messages that make the topics right."""
        return [o for chunk in self.flush_chunks(None) for o in chunk]

    def flush_chunks(self, citizens: int | None) -> Iterator[list[Outgoing]]:
        """``flush`` a chunk of at most ``citizens`` dirty citizens at a time, so that a gate
        catching up with a million citizens does not hold every output in memory at once."""
        now = self.clock()
        every = set(self.policy.purposes) if self.policy else set()
        pending = sorted(self.dirty)
        size = citizens or max(len(pending), 1)
        for start in range(0, len(pending), size):
            out: list[Outgoing] = []
            for citizen_id in pending[start:start + size]:
                wanted = self.dirty.pop(citizen_id)
                purposes = every | self.released_purposes.get(citizen_id, set()) if wanted is None else wanted
                if not purposes:
                    continue
                provisions = self.provisions(citizen_id)
                for purpose in sorted(purposes):
                    out.extend(self._reconcile(citizen_id, purpose, now, provisions))
            yield out

    def _reconcile(self, citizen_id: str, purpose: str, now: datetime, provisions: list[Provision]) -> list[Outgoing]:
        decision = self.decide(citizen_id, purpose, now, provisions)
        before = self.released.get((purpose, citizen_id))
        label = self.policy.label if self.policy else "none"
        out: list[Outgoing] = []
        if isinstance(decision, Refusal):
            if before is not None:
                out += self._retract(citizen_id, purpose, before, decision.reason, label, now)
            return out
        view_bytes = self.codec.view_bytes(decision)
        digest = self.codec.digest(view_bytes)
        if before is not None and before.ref == decision.citizen_ref and (
                before.digest == digest
                or (not before.digest.startswith(DIGEST_PREFIX) and before.digest == decision.legacy_digest())):
            self.stats["unchanged"] += 1
            return out
        reason = "first release"
        if before is not None and before.ref != decision.citizen_ref:
            out += self._retract(citizen_id, purpose, before, "released again under a new reference "
                                 f"(pseudonymisation key {decision.key_id})", label, now)
            reason = "re-released under a new reference"
        elif before is not None:
            reason = _change(before, decision)
        out += self._release(decision, view_bytes, digest, reason, label, now)
        return out

    def _release(self, view: View, view_bytes: bytes, digest: str, reason: str, label: str,
                 now: datetime) -> list[Outgoing]:
        topic = purpose_topic(view.purpose)
        released = Released(view.citizen_ref, digest, tuple(view.agencies), tuple(view.fields), view.basis, label,
                            tuple(view.overrides))
        self.released[(view.purpose, view.citizen_id)] = released
        self.released_purposes.setdefault(view.citizen_id, set()).add(view.purpose)
        self.stats["releases"] += 1
        return [
            Outgoing(topic, view.citizen_ref.encode(), self.codec.message(view_bytes, label, now)),
            self._disclosure(view.citizen_id, view.purpose, "RELEASE", released.agencies, released.fields, view.basis,
                             released.overrides, reason, label, topic, view.citizen_ref, now),
            Outgoing(GATE_RELEASED_TOPIC, f"{view.purpose}|{view.citizen_id}".encode(), released.dump()),
        ]

    def _retract(self, citizen_id: str, purpose: str, before: Released, reason: str, label: str,
                 now: datetime) -> list[Outgoing]:
        topic = purpose_topic(purpose)
        del self.released[(purpose, citizen_id)]
        self.released_purposes.get(citizen_id, set()).discard(purpose)
        self.stats["retractions"] += 1
        return [
            Outgoing(topic, before.ref.encode(), None),
            self._disclosure(citizen_id, purpose, "RETRACT", before.agencies, before.fields, before.basis,
                             before.overrides, reason, label, topic, before.ref, now),
            Outgoing(GATE_RELEASED_TOPIC, f"{purpose}|{citizen_id}".encode(), None),
        ]

    def _disclosure(self, citizen_id: str, purpose: str, action: str, agencies: tuple[str, ...],
                    fields: tuple[str, ...], basis: str | None, overrides: tuple[str, ...], reason: str, label: str,
                    topic: str, ref: str, now: datetime) -> Outgoing:
        """The audit record; a retraction carries what was out (agencies, fields, basis, overrides)."""
        record = {"disclosure_id": disclosure_id(), "citizen_id": citizen_id, "purpose": purpose,
                  "action": action, "agencies": agencies, "fields": fields, "basis": basis, "reason": reason,
                  "overrides": overrides,
                  "policy_version": label, "recipient_topic": topic, "recipient_key": ref, "at": now}
        return Outgoing(DISCLOSURES_TOPIC, citizen_id.encode(), self.disclosures.encode(record))


def _change(before: Released, view: View) -> str:
    if before.basis == view.basis and before.agencies == tuple(view.agencies) and before.fields == tuple(view.fields):
        return "corrected view: records changed"  # the usual case: what is out is the same as before
    parts = []
    lost_agencies = sorted(set(before.agencies) - set(view.agencies))
    lost_fields = sorted(set(before.fields) - set(view.fields))
    if lost_agencies:
        parts.append(f"no longer agencies {lost_agencies}")
    if lost_fields:
        parts.append(f"no longer fields {lost_fields}")
    gained = sorted(set(view.agencies) - set(before.agencies))
    if gained:
        parts.append(f"now also agencies {gained}")
    if before.basis != view.basis:
        parts.append(f"basis now {view.basis!r}")
    return "corrected view: " + ("; ".join(parts) if parts else "records changed")
