"""`caselink policy check`, `caselink consent record|withdraw|show` and `caselink audit`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from caselink.core.settings import get_settings
from caselink.output import console, emit, fail, note, show_table

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.

policy_app = typer.Typer(help="The consent policy: which purposes may receive what.", no_args_is_help=True)
consent_app = typer.Typer(help="Consents, objections and opt-outs.", no_args_is_help=True)


@policy_app.command("check")
def policy_check(
    path: Annotated[Path | None, typer.Argument(help="policy file (default: the configured one)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate a policy file; errors name their line. Exit 1 when it is invalid."""
    from caselink.core.settings import get_settings
    from caselink.streams.consent.gate_loop import policy_path
    from caselink.streams.consent.policy import PolicyError, load_policy

    path = path or policy_path(get_settings())
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        emit({"valid": False, "problems": exc.problems}, as_json, "\n".join(escape(p) for p in exc.problems))
        raise typer.Exit(1) from None
    if as_json:
        emit({"valid": True, "version": policy.version, "label": policy.label,
              "purposes": {n: p.model_dump() for n, p in policy.purposes.items()}}, True)
        return
    show_table(f"{path}: policy {policy.label}",
               ("purpose", "legal basis", "consent", "opt-outs", "override", "agencies", "fields", "min weight",
                "pseudonymised"),
               [(name, p.legal_basis, p.consent, "apply" if p.national_opt_out else "-",
                 "yes" if p.statutory_override else "-", ", ".join(p.agencies), ", ".join(p.fields),
                 f"{p.min_match_weight:g}", "yes" if p.pseudonymise else "no")
                for name, p in policy.purposes.items()], right=("min weight",))


def _publish(event: dict[str, Any], topic: str) -> None:
    from caselink.core.kafka import idempotent_producer
    from caselink.core.settings import get_settings
    from caselink.schemas import default_serde

    producer = idempotent_producer(get_settings())
    producer.produce(topic, default_serde().encode("ConsentEvent", event, check=True),
                     key=event["consent_id"].encode())
    if producer.flush(30):
        fail("the consent was not acknowledged by Kafka")


def _consent_topics() -> list[str]:
    from caselink.core.settings import get_settings
    from caselink.infra.topics import consent_topics

    return consent_topics(get_settings().agencies)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _decision(permit: bool | None, opt_out: bool, fields: str) -> bool:
    """PERMIT (True) or DENY, from flags that must agree: nothing is guessed or quietly dropped."""
    if opt_out and permit:
        fail("--national-opt-out is a refusal: it cannot be recorded with --permit")
    if opt_out and fields:
        fail("a national opt-out is always whole: it cannot name --fields (record an objection with --deny "
             "--fields instead)")
    if permit is None and not opt_out:
        fail("say whether this is consent (--permit), an objection (--deny) or a national opt-out "
             "(--national-opt-out)")
    return bool(permit) and not opt_out


@consent_app.command("record")
def consent_record(
    purpose: Annotated[str, typer.Option(help="a purpose of the policy, or * for all")],
    by: Annotated[str, typer.Option(help="who recorded it (kept in the consent)")],
    citizen: Annotated[str | None, typer.Option(help="subject: a citizen id")] = None,
    record: Annotated[str | None, typer.Option(help="subject: agency:record_id")] = None,
    identifier: Annotated[str | None, typer.Option(help="subject: scheme:value, e.g. nhs_number:9434765919")] = None,
    permit: Annotated[bool | None, typer.Option(
        "--permit/--deny", help="consent, or an objection: one of the two, or --national-opt-out")] = None,
    opt_out: Annotated[bool, typer.Option("--national-opt-out", help="a national data opt-out (a deny)")] = False,
    agencies: Annotated[str, typer.Option(help="comma-separated agencies it covers (default all)")] = "",
    fields: Annotated[str, typer.Option(help="comma-separated fields it covers (default all)")] = "",
    valid_from: Annotated[str | None, typer.Option("--from", help="ISO date or time it starts")] = None,
    valid_to: Annotated[str | None, typer.Option("--to", help="ISO date or time it ends")] = None,
    basis: Annotated[str | None, typer.Option(help="e.g. the form or conversation it came from")] = None,
    consent_id: Annotated[str | None, typer.Option("--id", help="reuse an id to replace a consent")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record a consent, objection or national opt-out; the gate applies it within seconds."""
    from caselink.connectors.consent_events import consent_event, subject_from
    from caselink.core.settings import get_settings
    from caselink.infra.topics import CONSENT_EVENTS_TOPIC
    from caselink.streams.consent.gate_loop import policy_path
    from caselink.streams.consent.policy import PolicyError, load_policy
    from caselink.streams.consent.register import validate_consent

    decision = _decision(permit, opt_out, fields)
    try:
        event = consent_event(
            subject_from(citizen, record, identifier), purpose, decision, by, consent_id=consent_id,
            national_opt_out=opt_out, basis=basis, agencies=[a for a in agencies.split(",") if a],
            fields=[f for f in fields.split(",") if f], valid_from=_date(valid_from), valid_to=_date(valid_to))
        problems = validate_consent(event, load_policy(policy_path(get_settings())))
    except (ValueError, PolicyError) as exc:
        fail(str(exc))
    if problems:
        fail("; ".join(problems))
    _publish(event, CONSENT_EVENTS_TOPIC)
    emit(event, as_json, f"recorded consent {event['consent_id']}: {event['decision']} {purpose}")


@consent_app.command("withdraw")
def consent_withdraw(
    consent_id: str,
    by: Annotated[str, typer.Option(help="who withdrew it")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Withdraw a consent (or lift an objection or opt-out) by its id; the gate retracts what it allowed."""
    from caselink.connectors.consent_events import withdrawal_of
    from caselink.core.kafka import read_to_end
    from caselink.core.settings import get_settings
    from caselink.schemas import UndecodableEventError, default_serde

    serde = default_serde()
    found = None
    for msg in read_to_end(get_settings(), _consent_topics()):
        try:
            _, event = serde.decode(msg.value(), expect="ConsentEvent")
        except (UndecodableEventError, ValueError):
            continue
        if event["consent_id"] == consent_id and (found is None or event["recorded_at"] >= found[0]["recorded_at"]):
            found = (event, msg.topic())
    if found is None:
        fail(f"no consent {consent_id} on the consent topics")
    if found[0]["status"] == "WITHDRAWN":
        fail(f"consent {consent_id} is already withdrawn")
    withdrawal = withdrawal_of(found[0], by)
    _publish(withdrawal, found[1])
    emit(withdrawal, as_json, f"withdrew consent {consent_id}")


NO_KEY = "(no key here)"


def _offline_gate() -> Any:
    """A GateCore rebuilt from the topics, as the live gate sees them (same policy and key)."""
    from caselink.core.kafka import read_to_end
    from caselink.core.settings import get_settings
    from caselink.infra.topics import LINKED_CASES_TOPIC
    from caselink.streams.consent.gate_core import INPUT_ERRORS, GateCore
    from caselink.streams.consent.gate_loop import policy_path, pseudonymiser_from
    from caselink.streams.consent.policy import PolicyError, load_policy

    settings = get_settings()
    try:
        policy = load_policy(policy_path(settings))
    except PolicyError as exc:
        fail(f"the consent policy is invalid:\n{exc}")
    from caselink.output import reading

    pseudonymiser = pseudonymiser_from(settings)
    if pseudonymiser is None:
        # Whether a pseudonymised purpose may see a citizen does not depend on the key, only the
        # reference does: decide with a throwaway key and say the reference needs the gate's.
        import secrets

        from caselink.streams.consent.pseudonym import Pseudonymiser

        pseudonymiser = Pseudonymiser(secrets.token_bytes(32), NO_KEY)
    core = GateCore(policy, pseudonymiser)
    with reading("reading the linked cases and consents") as progress:
        messages = read_to_end(settings, [LINKED_CASES_TOPIC, *_consent_topics()], progress=progress)
    for msg in messages:
        try:
            core.apply_input(msg.topic(), msg.key(), msg.value())
        except INPUT_ERRORS:
            continue  # the live gate dead-letters these
    return core


@consent_app.command("show")
def consent_show(
    citizen_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The consents that apply to a citizen and what each purpose may see of them now."""
    from caselink.streams.consent.evaluate import Refusal

    core = _offline_gate()
    live = core.resolve(citizen_id)
    if live not in core.cases:
        fail(f"no live citizen {citizen_id}")
    provisions = sorted(core.register.about(core.subjects[live]), key=lambda p: p.recorded_at)
    decisions = {name: core.decide(live, name) for name in sorted(core.policy.purposes)}
    data = {
        "citizen_id": live, "retired_id": citizen_id if live != citizen_id else None,
        "consents": [{"consent_id": p.consent_id, "subject": p.subject, "purpose": p.purpose,
                      "decision": "PERMIT" if p.permit else "DENY", "national_opt_out": p.national_opt_out,
                      "agencies": sorted(p.agencies), "fields": sorted(p.fields),
                      "valid_from": p.valid_from, "valid_to": p.valid_to, "recorded_at": p.recorded_at}
                     for p in provisions],
        "purposes": {n: ({"released": False, "reason": d.reason} if isinstance(d, Refusal) else
                         {"released": True, "basis": d.basis, "agencies": d.agencies, "fields": d.fields,
                          "reference": None if d.key_id == NO_KEY else d.citizen_ref})
                     for n, d in decisions.items()},
    }
    from caselink.ops import gate_health

    gate = gate_health(get_settings())  # what the policy allows is not always what the gate can do now
    data["gate"] = {"url": gate.get("url"), "status": gate.get("status"), "reason": gate.get("reason")}
    if as_json:
        emit(data, True)
        return
    if gate.get("status") != "ok":
        note(f"note: the consent gate at {gate.get('url')} is {gate.get('status')}"
             + (f": {gate.get('reason') or gate.get('error')}" if gate.get("reason") or gate.get("error") else "")
             + "; below is what the policy and the consents allow, which the gate releases once it is ok")
    console.print(f"citizen {live}" + (f" (asked for retired id {citizen_id})" if live != citizen_id else ""),
                  markup=False, highlight=False)
    rows = []
    for c in data["consents"]:
        decision = "OPT-OUT" if c["national_opt_out"] else c["decision"]
        valid = f"{c['valid_from'] or '…'} → {c['valid_to'] or '…'}"
        rows.append((c["consent_id"], c["subject"], c["purpose"], decision, ", ".join(c["agencies"]) or "all",
                     ", ".join(c["fields"]) or "all", valid, str(c["recorded_at"])[:19]))
    show_table("consents, objections and opt-outs that apply",
               ("id", "about", "purpose", "decision", "agencies", "fields", "valid", "recorded"), rows,
               empty="no consents recorded")
    show_table(f"what each purpose may see now (policy {core.policy.label})",
               ("purpose", "released", "agencies", "fields / reason", "basis"),
               [(name, Text("yes", "green"), ", ".join(d["agencies"]), ", ".join(d["fields"]), d["basis"])
                if d["released"] else (name, Text("no", "red"), "", d["reason"], "")
                for name, d in data["purposes"].items()])


def audit_command(
    citizen_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Everything released to or retracted from purpose topics about a citizen, in order. Reads only
    the partition the citizen's disclosures are on. Exit 1 when nothing was ever released about it."""
    from caselink.core.kafka import key_partition, partition_count, read_to_end
    from caselink.infra.topics import DISCLOSURES_TOPIC
    from caselink.output import reading
    from caselink.schemas import default_serde

    settings = get_settings()
    serde = default_serde()
    key = citizen_id.encode()
    partitions = partition_count(settings, DISCLOSURES_TOPIC)
    if not partitions:
        fail(f"no topic {DISCLOSURES_TOPIC}: run `caselink topics ensure`")
    only = {DISCLOSURES_TOPIC: {key_partition(key, partitions)}}  # the gate's producer partitions by key
    with reading(f"reading {DISCLOSURES_TOPIC}") as progress:
        messages = read_to_end(settings, [DISCLOSURES_TOPIC], progress=progress, only=only)
    rows = [serde.decode(m.value(), expect="Disclosure")[1] for m in messages if m.key() == key]
    rows.sort(key=lambda r: r["at"])
    if not rows:
        fail(f"nothing has been released about {citizen_id} (no disclosure on {DISCLOSURES_TOPIC} names it)")
    if as_json:
        emit(rows, True)
        return
    show_table(f"disclosures about {citizen_id}",
               ("when", "purpose", "action", "agencies", "fields", "basis", "why", "policy"),
               [(str(r["at"])[:19], r["purpose"], Text(r["action"], "green" if r["action"] == "RELEASE" else "red"),
                 ", ".join(r["agencies"]), ", ".join(r["fields"]), r["basis"] or "", r["reason"] or "",
                 r["policy_version"]) for r in rows])
