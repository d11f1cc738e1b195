"""The one `caselink` command; sub-commands live beside the code they drive."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated

import typer

from caselink.cli_chart import chart_app
from caselink.cli_connect import connect_app
from caselink.cli_connector import connector_app
from caselink.cli_consent import audit_command, consent_app, policy_app
from caselink.cli_evaluate import evaluate_command
from caselink.cli_infra import infra_app, topics_app
from caselink.cli_link import link_command, train_command
from caselink.cli_ops import dlq_app, export_command, rebuild_command, replay_command, status_command
from caselink.output import emit, fail

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md); the settings are read once, for help texts that show this machine's
# values. Imports for type annotations only sit under TYPE_CHECKING.
if TYPE_CHECKING:
    from caselink.core.settings import Settings


def configured(what: str, read: Callable[[Settings], object]) -> str:
    """Help text naming a setting and its value now (caselink.yaml and CASELINK_* included), so
    `--help` shows the port this machine would use, not the built-in default."""
    settings = _settings_for_help()
    if settings is None:
        return f"default: {what} (the configuration has errors)"
    return f"default: {what}, now {read(settings)}"


@lru_cache(maxsize=1)
def _settings_for_help() -> Settings | None:
    """The settings read once for every help text (not get_settings: a command reads its own when
    it runs); None when the configuration has errors, which the command then reports."""
    from caselink.core.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError:
        return None


app = typer.Typer(help="caselink: link public-sector case records around the citizen.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"caselink {version('caselink')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the installed version and exit.")] = False,
) -> None:
    pass


app.add_typer(infra_app, name="infra")
app.add_typer(topics_app, name="topics")
app.add_typer(connector_app, name="connector")
app.add_typer(connect_app, name="connect")
app.add_typer(policy_app, name="policy")
app.add_typer(consent_app, name="consent")
app.command("audit")(audit_command)
app.command("status")(status_command)
app.command("replay")(replay_command)
app.command("export")(export_command)
app.command("rebuild")(rebuild_command)
app.add_typer(dlq_app, name="dlq")
app.add_typer(chart_app, name="chart")
schemas_app = typer.Typer(help="Event contracts: compatibility check and release snapshots.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("check")
def schemas_check(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Fail when a current schema cannot read data written by a released version."""
    from caselink.schemas.compat import check_all

    problems = check_all()
    emit([str(p) for p in problems], as_json, "all schemas backward compatible" if not problems
         else "\n".join(str(p) for p in problems))
    if problems:
        raise typer.Exit(1)


@schemas_app.command("snapshot")
def schemas_snapshot(version: str) -> None:
    """Record the current schemas as a released version under schemas/history/."""
    from caselink.schemas.compat import snapshot

    written = snapshot(version)
    emit(None, False, "\n".join(str(p) for p in written) or "nothing changed since the last snapshot")


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="leave the broker up afterwards")] = False,
) -> None:
    """Start Kafka, publish the bundled sample agencies' events, link them and show the citizens."""
    from caselink.demo import run_demo

    try:
        run_demo(keep_running=keep_running)
    except RuntimeError as exc:
        fail(str(exc))


@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(
        help="web API port (" + configured("worker.web_port", lambda s: s.worker.web_port) + ")")] = None,
    app_id: Annotated[str | None, typer.Option(help="Faust app id / consumer group")] = None,
    loglevel: Annotated[str | None, typer.Option(
        help="debug, info, warning, error (" + configured("log.level", lambda s: s.log.level) + ")")] = None,
) -> None:
    """Run the stream processor: normalise agency events, keep the citizen index, publish linked cases."""
    from caselink.cli_worker import run_worker

    run_worker(web_port, app_id, loglevel)


@app.command()
def gate(
    web_port: Annotated[int | None, typer.Option(
        help="/health and /metrics port (" + configured("consent.web_port", lambda s: s.consent.web_port) + ")")]
    = None,
    app_id: Annotated[str | None, typer.Option(help="the app id of the workers it serves")] = None,
) -> None:
    """Run the consent gate: release to purpose topics what policy and consent allow, with the audit."""
    from caselink.cli_worker import run_gate

    run_gate(web_port, app_id)


@app.command()
def shard(
    tier: Annotated[str, typer.Argument(help="blocks (finds candidates) or records (scores them)")],
    web_port: Annotated[int | None, typer.Option(
        help="/health and /metrics port (" + configured("shards.web_port", lambda s: s.shards.web_port) + ")")]
    = None,
    app_id: Annotated[str | None, typer.Option(help="the app id of the workers it serves")] = None,
    instance_id: Annotated[str | None, typer.Option(
        help="a name for this shard that survives its restarts, unique in its tier: it gets its own partitions "
             "back after a restart within the session timeout (" + configured(
                 "shards.instance_id", lambda s: s.shards.instance_id or "unset") + ")")] = None,
) -> None:
    """Run one shard of the sharded index: the key partitions its group deals it, answered for
    every change on the link input (docs/architecture.md, "The sharded index")."""
    from caselink.cli_worker import run_shard

    if tier not in ("blocks", "records"):
        raise typer.BadParameter(f"{tier!r}: expected blocks or records", param_hint="TIER")
    if instance_id is not None:
        from pydantic import ValidationError

        from caselink.core.settings import ShardSettings

        try:
            ShardSettings(instance_id=instance_id)
        except ValidationError as exc:
            raise typer.BadParameter(f"{instance_id!r}: {exc.errors()[0]['msg']}", param_hint="--instance-id") from None
    run_shard(tier, web_port, app_id, instance_id)


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="a topic, or a purpose name for its topic (planning)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="only the last N messages")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then print new messages as they arrive")] = False,
) -> None:
    """Show a topic's messages decoded (LinkedCase, LinkDecision, DeadLetter ...), each as P@O
    (partition@offset). Exit 1 when the topic does not exist or holds nothing (unless --follow)."""
    from caselink.cli_worker import tail as tail_topic

    tail_topic(topic, as_json, limit, follow)


app.command("link")(link_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)

review_app = typer.Typer(help="Possible matches: a person's verdict.", no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("decide")
def review_decide(
    left: Annotated[str, typer.Argument(help="record key, e.g. health:HE0000001")],
    right: Annotated[str, typer.Argument(help="record key")],
    by: Annotated[str, typer.Option(help="who decided (kept in the audit)")],
    same: Annotated[bool | None, typer.Option("--same/--different", help="the same person, or not")] = None,
    reason: Annotated[str | None, typer.Option(help="a note kept with the decision")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="check both records are in the citizen index "
                                        "(reads caselink.linked-cases)")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Tell the linker two records are (or are not) the same person; it applies it in order.
    Exit 2 without --same or --different or with a key of no agency; exit 1 when a record is not
    in the index (the linker would refuse the decision)."""
    if same is None:
        fail("say which: --same (one person) or --different (two people)", code=2)
    _publish_review(left, right, by, reason, check, as_json, action=None, same=same)


@review_app.command("undo")
def review_undo(
    left: Annotated[str, typer.Argument(help="record key, e.g. health:HE0000001")],
    right: Annotated[str, typer.Argument(help="record key")],
    by: Annotated[str, typer.Option(help="who undid it (kept in the audit)")],
    reason: Annotated[str | None, typer.Option(help="a note kept with the undo")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="check both records are in the citizen index "
                                        "(reads caselink.linked-cases)")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Take back a decision about two records: the linker weighs the pair again as if nobody had
    decided (linked if it scores above the link threshold, open for review if in the review band).
    The worker's log says whether there was a decision to undo."""
    _publish_review(left, right, by, reason, check, as_json, action="undo", same=False)


def _publish_review(left: str, right: str, by: str, reason: str | None, check: bool, as_json: bool,
                    action: str | None, same: bool) -> None:
    """A ReviewDecision onto the link input, after checking the keys (exit 2) and the records (exit 1)."""
    import uuid
    from datetime import UTC, datetime

    from caselink.core.kafka import idempotent_producer
    from caselink.core.settings import get_settings
    from caselink.infra.topics import LINK_INPUT_TOPIC
    from caselink.schemas import default_serde

    settings = get_settings()
    for key in (left, right):
        agency, _, record_id = key.partition(":")
        if not record_id:
            fail(f"{key}: a record key is agency:record_id, e.g. health:HE0000001", code=2)
        if agency not in settings.agencies:
            fail(f"{key}: no agency {agency!r} (agencies: {', '.join(settings.agencies)})", code=2)
    if left == right:
        fail("the two records are the same record", code=2)
    if check:
        from caselink.ops import records_in_index
        from caselink.output import reading

        with reading("reading caselink.linked-cases") as progress:
            known = records_in_index(settings, {left, right}, progress)
        missing = [k for k in (left, right) if k not in known]
        if missing:
            fail(f"no record {' or '.join(missing)} in the citizen index (caselink.linked-cases): the linker would "
                 "refuse the decision. Check the key (`caselink tail caselink.link-decisions` lists records)")
    decision = {"decision_id": str(uuid.uuid4()), "left_record": left, "right_record": right, "same_person": same,
                "decided_by": by, "reason": reason, "decided_at": datetime.now(UTC), "action": action}
    producer = idempotent_producer(settings)
    producer.produce(LINK_INPUT_TOPIC, default_serde().encode("ReviewDecision", decision, check=True),
                     key=min(left, right).encode())
    if producer.flush(30):
        fail("the decision was not acknowledged by Kafka")
    what = ("the decision about them is taken back" if action == "undo"
            else f"they are {'the same person' if same else 'different people'}")
    emit(decision, as_json, f"recorded: {left} and {right}: {what} (decision {decision['decision_id']}; the "
         "worker's log says when it is applied)")


ingest_app = typer.Typer(help="HTTP ingest for agencies that push changes.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("serve")
def ingest_serve(
    port: Annotated[int | None, typer.Option(
        help="port (" + configured("ingest.port", lambda s: s.ingest.port) + ")")] = None,
) -> None:
    """Serve POST /v1/{agency}/person-events and /v1/{agency}/fhir (tokens from CASELINK_INGEST__TOKENS)."""
    import uvicorn

    from caselink.core.settings import get_settings
    from caselink.ingest import ingest_app

    settings = get_settings()
    if not settings.ingest.tokens:
        fail("no agency tokens: set CASELINK_INGEST__TOKENS='{\"health\": \"...\"}' in the environment")
    tls = settings.web  # HTTPS when a certificate is configured (CASELINK_WEB__TLS_CERTFILE / _KEYFILE)
    from caselink.core.logs import logging_config

    uvicorn.run(ingest_app(settings), host=settings.ingest.host, port=port or settings.ingest.port,
                log_config=logging_config(settings, role="ingest"),
                ssl_certfile=str(tls.tls_certfile) if tls.tls_certfile else None,
                ssl_keyfile=str(tls.tls_keyfile) if tls.tls_keyfile else None)


@ingest_app.command("openapi")
def ingest_openapi() -> None:
    """Print the ingest API's OpenAPI document."""
    import json

    from caselink.core.settings import get_settings
    from caselink.ingest import ingest_app

    typer.echo(json.dumps(ingest_app(get_settings()).openapi(), indent=2))


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="print caselink's version and exit")] = False,
) -> None:
    """caselink: link public-sector case records around the citizen."""
    if version:
        from importlib.metadata import version as installed

        typer.echo(f"caselink {installed('caselink')}")
        raise typer.Exit(0)


def main() -> None:
    """The CLI; a configuration error is one message naming the file and line, exit 2, no traceback."""
    from caselink.core.settings import SettingsError

    try:
        app()
    except SettingsError as exc:
        fail(f"configuration: {exc}", code=2)


if __name__ == "__main__":
    main()
