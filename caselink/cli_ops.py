"""Operators' and analysts' commands: status, replay, dlq, export."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.text import Text

from caselink.core.settings import get_settings
from caselink.output import console, emit, fail, reading, show_table

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.

dlq_app = typer.Typer(help="Dead letters: what failed, why, and sending it again after a fix.", no_args_is_help=True)


def status_command(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    max_lag: Annotated[int, typer.Option(help="a consumer group lagging more than this is unhealthy")] = 100_000,
    interval: Annotated[float, typer.Option(help="seconds over which throughput is measured")] = 1.0,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="check the worker's /health")] = True,
    gate: Annotated[bool, typer.Option("--gate/--no-gate", help="check the consent gate's /health")] = True,
) -> None:
    """Broker, topics, consumer-group lag per partition, throughput, the shard tiers (in a sharded
    deployment), worker, consent gate and index. Exit 1 when unhealthy."""
    from caselink.core.kafka import admin_client, bootstrap_servers
    from caselink.core.settings import get_settings
    from caselink.infra.topics import LINK_SHARDS_TOPIC, LINKED_CASES_TOPIC, person_events_topic
    from caselink.ops import (
        gate_health,
        group_lags,
        local_broker_problems,
        shard_problems,
        shard_tiers,
        topic_ends,
        worker_health,
    )

    settings = get_settings()
    problems: list[str] = []
    report: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(settings)}
    try:
        admin = admin_client(settings)  # keep a reference: a collected client cancels its futures
        cluster = admin.describe_cluster(request_timeout=5).result(timeout=6)
        md = admin.list_topics(timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure here means "broker unreachable"
        report["broker"] = {"status": "unreachable", "error": str(exc)}
        report["problems"] = local_broker_problems(settings)  # why, when it is the local broker
        report["worker"] = worker_health(settings) if worker else None
        emit(report, as_json, f"[red]broker unreachable[/] at {report['bootstrap_servers']}: {escape(str(exc))}"
             + "".join(f"\n[red]unhealthy:[/] {escape(p)}" for p in report["problems"])
             + (f"\nworker: {escape(str(report['worker'].get('reason') or report['worker'].get('status')))}"
                if report["worker"] else ""))
        raise typer.Exit(1) from None
    report["broker"] = {"status": "ok", "brokers": len(cluster.nodes), "controller": cluster.controller.id,
                        "topics": len([t for t in md.topics if not t.startswith("__")])}
    offline = [f"{t}[{p}]" for t, tm in md.topics.items() for p, pm in tm.partitions.items() if pm.leader < 0]
    if offline:
        problems.append(f"partitions without a leader: {', '.join(offline[:5])}")
    watched = [*(person_events_topic(a) for a in settings.agencies), LINKED_CASES_TOPIC]
    before = topic_ends(settings, watched)
    time.sleep(interval)
    after = topic_ends(settings, watched)
    report["throughput_per_s"] = {t: round((after[t] - before[t]) / interval, 1) for t in after}
    # The shard tiers' groups commit offset 0 of caselink.link-shards with their position in the
    # metadata: they are shown as tiers below, not as groups with a lag of 0.
    lags = [g for g in group_lags(settings) if not g.partitions or g.partitions[0]["topic"] != LINK_SHARDS_TOPIC]
    report["groups"] = [{"group": g.group, "state": g.state, "lag": g.total, "partitions": g.partitions}
                        for g in lags]
    problems += [f"group {g.group} lags {g.total:,} messages" for g in lags if g.total > max_lag]
    tiers = shard_tiers(settings)
    if settings.shards.enabled or any(t.members or t.answered_to is not None for t in tiers):
        report["shards"] = [{"tier": t.tier, "group": t.group, "state": t.state, "members": t.members,
                             "unowned_partitions": t.unowned, "answered_to": t.answered_to,
                             "link_input_end": t.link_input_end, "lag": t.lag} for t in tiers]
        problems += shard_problems(tiers, settings.shards.enabled, max_lag)
    problems += local_broker_problems(settings)
    if worker:
        health = worker_health(settings)
        report["worker"] = health
        if health.get("status") != "ok":
            why = health.get("reason") or health.get("error", "")
            problems.append(f"worker {health.get('url')}: {health.get('status')} {why}".strip())
    if gate:
        health = gate_health(settings)
        report["gate"] = health
        if health.get("status") != "ok":
            why = health.get("reason") or health.get("error") or ""
            problems.append(f"consent gate {health.get('url')}: {health.get('status')} {why}".strip())
    report["healthy"] = not problems
    report["problems"] = problems
    if as_json:
        emit(report, True)
    else:
        _print_status(report)
    if problems:
        raise typer.Exit(1)


def _print_status(report: dict[str, Any]) -> None:
    b = report["broker"]
    console.print(f"broker [green]ok[/]: {b['brokers']} node(s), controller {b['controller']}, {b['topics']} topics "
                  f"at {report['bootstrap_servers']}")
    rates = ", ".join(f"{t} {r:,.0f}/s" for t, r in report["throughput_per_s"].items() if r) or "idle"
    console.print(f"throughput: {rates}")
    rows = [(g["group"], g["state"], p["topic"], p["partition"], p["committed"], p["end"],
             Text(str(p["lag"]), "red" if p["lag"] else "green"))
            for g in report["groups"]
            for p in g["partitions"] or [{"topic": "-", "partition": "", "committed": "", "end": "", "lag": 0}]]
    show_table("consumer groups", ("group", "state", "topic", "partition", "committed", "end", "lag"), rows,
               right=("partition", "committed", "end", "lag"))
    tiers = report.get("shards")
    if tiers:
        rows = [(t["tier"], t["state"], ", ".join(f"{m['instance_id'] or 'unnamed'} ({len(m['partitions'])})"
                                                  for m in t["members"]) or "none",
                 str(len(t["unowned_partitions"])), "-" if t["answered_to"] is None else f"{t['answered_to']:,}",
                 f"{t['link_input_end']:,}", Text(f"{t['lag']:,}", "red" if t["lag"] else "green"))
                for t in tiers]
        show_table("shard tiers (partitions each shard holds)", ("tier", "state", "shards", "unowned",
                                                                 "answered to", "link input", "lag"), rows,
                   right=("unowned", "answered to", "link input", "lag"))
    w = report.get("worker")
    if w:
        colour = "green" if w.get("status") == "ok" else "red"
        detail = (f"{w.get('records', '?')} records, {w.get('citizens', '?')} citizens, "
                  f"{w.get('review_open', '?')} open reviews" if "records" in w else w.get("error", ""))
        if w.get("mode") == "sharded resolver":
            held = w.get("shards", {}).get("held_changes", 0)
            detail += f"; sharded resolver, {held:,} change(s) waiting for the shards' answers"
        console.print(f"worker [{colour}]{w.get('status')}[/] ({w['url']}): {escape(str(detail))}")
    g = report.get("gate")
    if g:
        colour = "green" if g.get("status") == "ok" else "red"
        role = "active" if g.get("active") else "standby"
        if "partitions" in g:  # consent.partitioned: this process serves some of the citizens
            role = f"sharing the citizens, partitions {g['partitions']} of caselink.linked-cases"
        detail = (f"{role}, policy {g.get('policy')}, {g.get('released')} views "
                  f"out, {g.get('citizens')} citizens" if "released" in g else g.get("error", ""))
        console.print(f"consent gate [{colour}]{g.get('status')}[/] ({g['url']}): {escape(str(detail))}")
    for problem in report["problems"]:
        console.print(f"[red]unhealthy:[/] {escape(problem)}")


def replay_command(
    topic: Annotated[str, typer.Argument(help="the source topic, e.g. agency.health.person-events")],
    since: Annotated[str | None, typer.Option("--from", help="ISO time (UTC unless given) or a duration: 30m, 2h, 7d")]
    = None,
    offsets: Annotated[str | None, typer.Option(help="partition@offset,... to start from (ids as `tail` prints "
                                                "them)")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="everything still on the topic")] = False,
    to: Annotated[str | None, typer.Option("--to", help="a sandbox topic to replay into")] = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="back onto the same topic, into the live pipeline")]
    = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would move, move nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-deliver a topic's events from a time, offsets or the beginning, into a sandbox topic (--to)
    or back into the live pipeline (--in-place: safe, the linker skips what it has applied by event
    id and source version). Both choices must be said: neither has a default."""
    from caselink.ops import parse_offsets, parse_since, plan_replay, replay

    starts = [name for name, given in (("--from", since), ("--offsets", offsets), ("--from-beginning", from_beginning))
              if given]
    if not starts:
        fail("say where to start: --from TIME (e.g. 6h, 2026-11-01T00:00), --offsets P@O,... or --from-beginning",
             code=2)
    if len(starts) > 1:
        fail(f"say where to start once: {' and '.join(starts)} were both given", code=2)
    if to and in_place:
        fail("--to and --in-place say different things: choose one", code=2)
    if not to and not in_place:
        fail(f"say where to: --to SANDBOX_TOPIC, or --in-place to re-deliver onto {topic} itself "
             "(safe for the live pipeline: the linker skips what it has already applied)", code=2)
    settings = get_settings()
    try:
        start_offsets = parse_offsets(offsets) if offsets else None
        moment = parse_since(since) if since else None
    except ValueError as exc:
        fail(str(exc), code=2)
    try:
        plan = plan_replay(settings, topic, moment, start_offsets, to)
    except ValueError as exc:
        fail(str(exc))
    summary = {"topic": plan.topic, "target": plan.target, "messages": plan.count,
               "partitions": {p: {"from": plan.start[p], "to": plan.end[p]} for p in plan.start}, "dry_run": dry_run}
    if dry_run or plan.count == 0:
        emit(summary, as_json, f"{'would replay' if dry_run else 'nothing to replay:'} {plan.count:,} messages "
             f"from {plan.topic} to {plan.target}: "
             + ", ".join(f"{p}@{plan.start[p]}..{p}@{plan.end[p]}" for p in plan.start))
        return
    if plan.target != plan.topic:
        from caselink.core.kafka import admin_client
        from caselink.infra.topics import TopicSpec, ensure_topics

        ensure_topics(admin_client(settings), [TopicSpec(plan.target, len(plan.start))],
                      settings.kafka.replication_factor, settings.kafka.min_insync_replicas)
    with Progress(console=console, disable=as_json) as progress:
        task = progress.add_task(f"replaying {plan.topic}", total=plan.count)
        sent = replay(settings, plan, lambda n: progress.update(task, completed=n))
    emit({**summary, "sent": sent}, as_json, f"replayed {sent:,} messages from {plan.topic} to {plan.target}")


@dlq_app.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Dead letters grouped by stage, error type and origin, with counts."""
    from caselink.core.settings import get_settings
    from caselink.ops import dead_letters, redriven, summarise

    with reading("reading caselink.dead-letters") as progress:
        letters = dead_letters(get_settings(), progress)
    done = redriven(get_settings())
    rows = summarise(letters)
    if as_json:
        emit({"total": len(letters), "redriven": len(done), "groups": rows}, True)
        return
    show_table(f"{len(letters)} dead letters ({len(done)} already re-driven)",
               ("stage", "error", "origin topic", "count"),
               [(r["stage"], r["error_type"], r["origin_topic"], r["count"]) for r in rows], right=("count",))


@dlq_app.command("show")
def dlq_show(
    stage: Annotated[str | None, typer.Option(help="connector, normalise, link or consent-gate")] = None,
    limit: Annotated[int, typer.Option(help="the most recent N")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The dead letters themselves: id, origin, reason and the start of the payload."""
    from caselink.ops import dead_letters, letter_agency, letter_id

    with reading("reading caselink.dead-letters") as progress:
        everything = dead_letters(get_settings(), progress)
    letters = [(m, d) for m, d in everything if stage is None or d["stage"] == stage][-limit:]
    if as_json:
        emit([{"id": letter_id(m), "agency": letter_agency(m), **{k: v for k, v in d.items() if k != "payload"},
               "payload": d["payload"].decode("utf-8", "replace")} for m, d in letters], True)
        return
    show_table("dead letters", ("id", "agency", "origin", "stage", "error", "payload"),
               [(letter_id(m), letter_agency(m) or "", d["origin"], d["stage"], d["error"][:160],
                 d["payload"][:80].decode("utf-8", "replace")) for m, d in letters],
               empty=f"no dead letters{' of stage ' + stage if stage else ''}")


@dlq_app.command("redrive")
def dlq_redrive(
    ids: Annotated[list[str] | None, typer.Argument(help="dead-letter ids (partition@offset); default: all")] = None,
    stage: Annotated[str | None, typer.Option(help="only this stage")] = None,
    mapping: Annotated[Path | None, typer.Option(help="the fixed mapping, for rows a connector could not map")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send dead letters again: events to their origin topic, connector rows through the fixed mapping.
    Each is sent once; a second redrive skips what was already sent."""
    from caselink.core.settings import get_settings
    from caselink.ops import dead_letters, letter_id, redrive

    with reading("reading caselink.dead-letters") as progress:
        everything = dead_letters(get_settings(), progress)
    letters = [(m, d) for m, d in everything
               if (stage is None or d["stage"] == stage) and (not ids or letter_id(m) in ids)]
    report = redrive(get_settings(), letters, str(mapping) if mapping else None, dry_run=dry_run)
    emit(report, as_json, f"{'would re-drive' if dry_run else 're-drove'} {len(report['redriven'])}, "
         f"skipped {len(report['skipped_already'])} already re-driven, {len(report['failed'])} failed"
         + "".join(f"\n  {f['id']}: {escape(f['reason'])}" for f in report["failed"]))
    if report["failed"]:
        raise typer.Exit(1)


def export_command(
    purpose: str,
    out: Annotated[Path, typer.Option(help="a .parquet or .csv file")],
    since: Annotated[str | None, typer.Option("--from", help="only views released since: ISO time or 7d, 2h")] = None,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="write a file with no rows instead of "
                                              "failing when nothing has been released")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Write a purpose topic's current views (one row per member record, typed columns) to Parquet
    or CSV. Exit 1, writing nothing, when the purpose has no topic or no views (see --allow-empty)."""
    from caselink.analyst import NoSuchPurposeError, export, read_purpose, why_empty
    from caselink.output import reading

    settings = get_settings()
    if out.suffix not in (".parquet", ".csv"):
        fail(f"export to .parquet or .csv, not {out.suffix or 'a file without an extension'}")
    try:
        with reading(f"reading caselink.cases.{purpose}") as progress:
            frame = read_purpose(purpose, since, settings, progress)
    except (NoSuchPurposeError, ValueError) as exc:
        fail(str(exc))
    if frame.empty and not allow_empty:
        window = f" released since {since}" if since else ""
        fail(f"no views{window} on caselink.cases.{purpose}; nothing written: {why_empty(purpose, settings)}")
    path = export(frame, out)
    dates = frame.attrs.get("dates_not_calendar_dates", 0)
    emit({"path": str(path), "rows": len(frame), "citizens": int(frame["citizen_ref"].nunique()),
          "columns": {c: str(t) for c, t in frame.dtypes.items()}, "dates_of_birth_not_calendar_dates": dates},
         as_json, f"wrote {len(frame):,} member rows of {frame['citizen_ref'].nunique():,} citizens to {path}"
         + (f" ({dates:,} dates of birth empty: not calendar dates)" if dates else ""))


def rebuild_command(
    model: Annotated[Path | None, typer.Option(help="model JSON (default: the bundled model)")] = None,
    do_switch: Annotated[bool, typer.Option("--switch", help="after the report: retire ids the new index lacks and "
                                            "rewind the linker, for workers restarted with this model")] = False,
    examples: Annotated[int, typer.Option(help="examples per kind of difference")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rebuild the index from the retained link input under a model, beside the live one, and compare."""
    from caselink.core.settings import get_settings
    from caselink.linkage.deployment import load_model
    from caselink.linkage.model import LinkageModel
    from caselink.rebuild import compare, live_members, rebuild_members_for, switch

    settings = get_settings()
    try:
        chosen = LinkageModel.load(model) if model else load_model(settings.linkage)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    from caselink.linkage.runtime import tune_gc_for_large_index

    tune_gc_for_large_index()
    with Progress(console=console, disable=as_json) as progress:
        task = progress.add_task(f"replaying the link input with model {chosen.version}", total=None)
        rebuilt = rebuild_members_for(settings, chosen, lambda done, total: progress.update(task, completed=done,
                                                                                           total=total))
    result = compare(live_members(settings), rebuilt)
    report = {"model": chosen.version, **result.summary(examples)}
    if do_switch:
        try:
            report["switch"] = switch(settings, live_members(settings), rebuilt)
        except RuntimeError as exc:
            fail(str(exc))
    if as_json:
        emit(report, True)
        return
    show_table(f"live index vs rebuilt with {chosen.version}", ("", "citizens"),
               [(label, f"{report[key]:,}") for label, key in (
                   ("live citizens", "live_citizens"), ("rebuilt citizens", "rebuilt_citizens"),
                   ("unchanged", "unchanged"), ("merged with others", "merged"), ("split apart", "split"),
                   ("otherwise changed", "changed"), ("records only in the rebuild", "new_records"),
                   ("records only in the live index", "missing_records"))], right=("citizens",))
    for kind in ("merged", "split", "changed"):
        for ex in report["examples"][kind]:
            console.print(f"[bold]{kind}[/] {escape(str(ex))}")
    if "switch" in report:
        done = report["switch"]
        console.print(f"switched: retired {done['retired']} ids, rewound {done['group_rewound']}; "
                      "start the workers with this model (CASELINK_WORKER__MODEL_PATH)")
