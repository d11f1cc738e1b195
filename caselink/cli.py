"""The one `caselink` command; sub-commands live beside the code they drive."""

from __future__ import annotations

from typing import Annotated

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

app = typer.Typer(help="caselink: link public-sector case records around the citizen.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
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
    web_port: Annotated[int | None, typer.Option(help="web API port (default from settings: 6066)")] = None,
    app_id: Annotated[str | None, typer.Option(help="Faust app id / consumer group")] = None,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info, debug")] = "warn",
) -> None:
    """Run the stream processor: normalise agency events, keep the citizen index, publish linked cases."""
    from caselink.cli_worker import run_worker

    run_worker(web_port, app_id, loglevel)


@app.command()
def gate(
    web_port: Annotated[int | None, typer.Option(help="/health and /metrics port (default from settings: 6067)")]
    = None,
    app_id: Annotated[str | None, typer.Option(help="the app id of the workers it serves")] = None,
) -> None:
    """Run the consent gate: release to purpose topics what policy and consent allow, with the audit."""
    from caselink.cli_worker import run_gate

    run_gate(web_port, app_id)


@app.command()
def tail(
    topic: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="only the last N messages")] = 0,
) -> None:
    """Show a topic's messages decoded (LinkedCase, LinkDecision, DeadLetter ...); a purpose name shows its topic."""
    from caselink.cli_worker import tail as tail_topic

    tail_topic(topic, as_json, limit)


app.command("link")(link_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)

review_app = typer.Typer(help="Possible matches: a person's verdict.", no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("decide")
def review_decide(
    left: Annotated[str, typer.Argument(help="record key, e.g. health:HE0000001")],
    right: Annotated[str, typer.Argument(help="record key")],
    same: Annotated[bool, typer.Option("--same/--different", help="the same person, or not")],
    by: Annotated[str, typer.Option(help="who decided (kept in the audit)")],
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Tell the linker two records are (or are not) the same person; it applies it in order."""
    import uuid
    from datetime import UTC, datetime

    from caselink.core.kafka import idempotent_producer
    from caselink.core.settings import get_settings
    from caselink.infra.topics import LINK_INPUT_TOPIC
    from caselink.schemas import default_serde

    decision = {"decision_id": str(uuid.uuid4()), "left_record": left, "right_record": right, "same_person": same,
                "decided_by": by, "reason": reason, "decided_at": datetime.now(UTC)}
    producer = idempotent_producer(get_settings())
    producer.produce(LINK_INPUT_TOPIC, default_serde().encode("ReviewDecision", decision, check=True),
                     key=left.encode())
    if producer.flush(30):
        fail("the decision was not acknowledged by Kafka")
    emit(decision, False, f"recorded: {left} and {right} are {'the same person' if same else 'different people'}")


ingest_app = typer.Typer(help="HTTP ingest for agencies that push changes.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("serve")
def ingest_serve(
    port: Annotated[int | None, typer.Option(help="default from settings (8080)")] = None,
) -> None:
    """Serve POST /v1/{agency}/person-events and /v1/{agency}/fhir (tokens from CASELINK_INGEST__TOKENS)."""
    import uvicorn

    from caselink.connectors.http_ingest import create_ingest_app
    from caselink.core.settings import get_settings

    settings = get_settings()
    if not settings.ingest.tokens:
        fail("no agency tokens: set CASELINK_INGEST__TOKENS='{\"health\": \"...\"}' in the environment")
    tls = settings.web  # HTTPS when a certificate is configured (CASELINK_WEB__TLS_CERTFILE / _KEYFILE)
    uvicorn.run(create_ingest_app(settings), host=settings.ingest.host, port=port or settings.ingest.port,
                ssl_certfile=str(tls.tls_certfile) if tls.tls_certfile else None,
                ssl_keyfile=str(tls.tls_keyfile) if tls.tls_keyfile else None)


@ingest_app.command("openapi")
def ingest_openapi() -> None:
    """Print the ingest API's OpenAPI document."""
    import json

    from caselink.connectors.http_ingest import create_ingest_app
    from caselink.core.settings import get_settings

    typer.echo(json.dumps(create_ingest_app(get_settings()).openapi(), indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
