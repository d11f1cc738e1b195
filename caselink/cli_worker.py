"""`caselink worker` and `caselink tail`."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.markup import escape

from caselink.core.settings import get_settings
from caselink.output import console, err_console, fail, note, reading

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.


def run_worker(web_port: int | None = None, app_id: str | None = None, loglevel: str | None = None) -> None:
    """Serve the web API, then start the linker thread (it rebuilds the index from the link input),
    the normaliser processes and, if configured, the gate.

    Order matters: a worker that cannot serve its web API (the port taken) must stop before it
    links or publishes anything. It used to start linking first and publish ~2,000 records before
    Faust failed to bind the port. Now the port is tried first (a clear error, nothing started),
    and what links or publishes starts only once the web server is listening (Faust starts it
    before its consumers and agents; a failed bind stops it there).
    """
    from caselink.core.settings import get_settings
    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.streams.metrics import observe_gc_pauses

    tune_gc_for_large_index()
    observe_gc_pauses()
    import atexit

    from caselink.linkage.deployment import load_model
    from caselink.streams.app import create_app
    from caselink.streams.linker_loop import LinkerLoop
    from caselink.streams.metrics import keep_only

    settings = get_settings()
    loglevel = loglevel or settings.log.level
    from caselink.core.logs import configure, logging_config

    configure(settings, loglevel, role="worker")
    if web_port is not None:
        settings.worker.web_port = web_port
    if app_id is not None:
        settings.worker.app_id = app_id
    from caselink.core.private import UnsafeDirectoryError, ensure_private_dir

    try:
        ensure_private_dir(settings.worker.data_dir)  # it holds the index's snapshot: 0700, never world-writable
    except UnsafeDirectoryError as exc:
        err_console.print(f"[red]worker not started:[/] data directory: {exc}", highlight=False)
        raise SystemExit(2) from None
    try:
        ensure_port_free(settings.worker.web_host, settings.worker.web_port)
    except OSError as exc:
        err_console.print(f"[red]worker not started:[/] cannot listen on {settings.worker.web_host}:"
                          f"{settings.worker.web_port} ({exc.strerror or exc}); nothing was linked or published. "
                          "Stop what holds the port or choose another with --web-port.", highlight=False)
        raise SystemExit(2) from None
    try:
        model = load_model(settings.linkage)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    linker = LinkerLoop(settings, model, f"{settings.worker.app_id}-linker")
    gate = None
    keep_only(linker=True, gate=settings.consent.in_worker)
    if settings.consent.in_worker:
        from caselink.streams.consent.gate_loop import GateLoop

        # The gate runs where the linker runs: one active gate per app, fenced by its transactions.
        gate = GateLoop(settings, is_leader=lambda: linker.publish_from is not None)
    normalisers = None
    if settings.worker.normaliser_processes > 0:
        from caselink.streams.normaliser_processes import NormaliserProcesses

        normalisers = NormaliserProcesses(settings, settings.worker.normaliser_processes, loglevel)

    started: list[object] = []

    def start_linking() -> None:
        """Called once the web server listens (see above); only the first time if Faust restarts it."""
        for part in (linker, gate, normalisers):
            if part is not None and part not in started:
                started.append(part)
                part.start()
                atexit.register(part.stop)

    app = create_app(settings, linker, gate, normalise=normalisers is None, normalisers=normalisers,
                     on_listening=start_linking)

    import logging

    from faust import Worker

    web_url = f"{settings.web.scheme}://{settings.worker.web_host}:{settings.worker.web_port}"
    app.conf.canonical_url = web_url  # type: ignore[assignment]  # faust's setter takes a str; its getter says URL
    logging.getLogger("caselink.worker").info("worker %s starting: model %s, web %s, log level %s",
                                              settings.worker.app_id, model.version, web_url, loglevel)
    # Faust's worker, without its command line: no banner (it wrote terminal escape codes into
    # log files and named the web app, not caselink), and caselink's log format for its loggers too.
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                    logging_config=logging_config(settings, loglevel, role="worker"))
    worker.execute_from_commandline()


def ensure_port_free(host: str, port: int) -> None:
    """Raise OSError (e.g. EADDRINUSE) if ``host:port`` cannot be listened on now."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is no obstacle
        probe.bind((host, port))
        probe.listen(1)


def tail(topic: str, as_json: bool = False, limit: int = 0, follow: bool = False) -> None:
    """Print a topic's messages decoded: everything on it now (the last ``limit``), then, with
    ``follow``, each new message as it arrives until interrupted. A topic that does not exist is an
    error; one with nothing on it says so (with why, for a purpose) and exits 1 unless following."""
    import uuid

    from caselink.core.kafka import consumer, iter_to_end

    settings = get_settings()
    if "." not in topic:  # a purpose name: its topic
        from caselink.analyst import NoSuchPurposeError, require_purpose_topic

        purpose = topic
        try:
            topic = require_purpose_topic(purpose, settings)
        except NoSuchPurposeError as exc:
            fail(str(exc))
    else:
        purpose = None
    c = consumer(settings, f"caselink-reader-{uuid.uuid4().hex[:12]}")
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            fail(f"no topic {topic} (`caselink topics list` shows caselink's topics)")
        ends: dict[tuple[str, int], int] = {}
        printed = 0
        with reading(f"reading {topic}") as progress:
            messages = iter_to_end(c, [topic], progress=progress, ends_out=ends)
            if limit:
                from collections import deque

                messages = iter(deque(messages, maxlen=limit))
            for msg in messages:
                _print_message(msg, as_json)
                printed += 1
        if not printed and not follow:
            why = ""
            if purpose is not None:
                from caselink.analyst import why_empty

                why = f": {why_empty(purpose, settings)}"
            fail(f"{topic} has no messages{why}")
        if follow:
            from confluent_kafka import TopicPartition

            c.assign([TopicPartition(t, p, offset) for (t, p), offset in ends.items()])
            note(f"following {topic} (Ctrl-C to stop)")
            try:
                while True:
                    for msg in c.consume(500, timeout=0.5):
                        if not msg.error():
                            _print_message(msg, as_json)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                return
    finally:
        c.close()


def _print_message(msg: Any, as_json: bool) -> None:
    from caselink.infra.topics import DEAD_LETTER_TOPIC
    from caselink.schemas import UndecodableEventError, default_serde
    from caselink.schemas.dead_letters import read_letter

    serde = default_serde()
    key = msg.key().decode(errors="replace") if msg.key() else None
    if msg.value() is None:
        record: object = None
        name = "tombstone"
    else:
        try:
            if msg.topic() == DEAD_LETTER_TOPIC:  # Kafka Connect's convention: the failed bytes, why in headers
                name, record = "DeadLetter", read_letter(msg, serde)
            else:
                name, record = serde.decode(msg.value(), topic=msg.topic(), partition=msg.partition(),
                                            offset=msg.offset())
        except UndecodableEventError as exc:
            name, record = "undecodable", str(exc)
    where = f"{msg.partition()}@{msg.offset()}"
    if as_json:
        sys.stdout.write(json.dumps({"topic": msg.topic(), "partition": msg.partition(),
                                     "offset": msg.offset(), "id": where, "key": key, "type": name,
                                     "value": record}, default=_default) + "\n")
    else:
        console.print(f"[dim]{where}[/] [bold]{escape(str(key))}[/] {name}: {escape(_summary(name, record))}",
                      highlight=False)


def _default(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _summary(name: str, record: object) -> str:
    if not isinstance(record, dict):
        return str(record)
    if name == "LinkedCase":
        members = ", ".join(f"{m['agency']}:{m['source_record_id']}" for m in record["members"])
        merged = f" merged {record['merged_from']}" if record["merged_from"] else ""
        return f"v{record['version']} [{members}]{merged}"
    if name == "LinkDecision":
        return f"{record['outcome']} -> {record['citizen_id']} ({len(record['candidates'])} candidates)"
    if name == "PersonEvent":
        p = record["person"] or {}
        return f"{record['op']} v{record['source_version']} {p.get('given_names')} {p.get('family_name')}"
    if name == "DeadLetter":
        return f"{record['stage']}: {record['error']}"
    if name == "GatedCase":
        members = ", ".join(f"{m['record_ref'][:24]}({len(m['fields'])} fields, {len(m['cases'])} cases)"
                            for m in record["members"])
        return f"{record['basis'][:60]} [{members}]"
    if name == "Disclosure":
        return f"{record['action']} {record['purpose']} {record['agencies']}: {record['reason']}"
    return json.dumps(record, default=_default)[:200]




def run_shard(tier: str, web_port: int | None = None, app_id: str | None = None,
              instance_id: str | None = None) -> None:
    """One shard of the sharded index in its own process (see streams/shard_process.py)."""
    import logging

    from caselink.core.logs import configure
    from caselink.core.settings import get_settings
    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.streams.metrics import keep_only, observe_gc_pauses
    from caselink.streams.shard_process import serve

    tune_gc_for_large_index()
    observe_gc_pauses()
    keep_only(linker=False, gate=False, shard=True)
    settings = get_settings()
    if app_id is not None:
        settings.worker.app_id = app_id
    if instance_id is not None:
        settings.shards.instance_id = instance_id  # checked by the command
    if tier == "blocks" and settings.shards.data_dir is not None:
        import os
        import sys

        from caselink.streams.shard_snapshot import kept_hash_seed

        seed = kept_hash_seed(settings.shards.data_dir)
        if sys.flags.ignore_environment:
            raise SystemExit("a block shard keeping snapshots (shards.data_dir) hashes its blocks under the seed kept "
                             "there, through PYTHONHASHSEED, which python -E or -I ignores: run without them")
        if os.environ.get("PYTHONHASHSEED") != seed:  # start again hashing as its snapshot was hashed
            # the same interpreter, flags and arguments (sys.orig_argv), so the same code is run
            os.execve(sys.executable, sys.orig_argv, {**os.environ, "PYTHONHASHSEED": seed})
    port = web_port or settings.shards.web_port
    configure(settings, role=f"{tier}-shard")
    logging.getLogger("caselink.shard").info("%s shard for app %s starting; health http://%s:%d/health", tier,
                                             settings.worker.app_id, settings.worker.web_host, port)
    serve(settings, tier, port)


def run_gate(web_port: int | None = None, app_id: str | None = None) -> None:
    """The consent gate in its own process (see streams/consent/gate_process.py)."""
    import logging

    from caselink.core.settings import get_settings
    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.streams.consent.gate_process import serve
    from caselink.streams.metrics import keep_only, observe_gc_pauses

    tune_gc_for_large_index()
    observe_gc_pauses()
    keep_only(linker=False, gate=True)

    settings = get_settings()
    if app_id is not None:
        settings.worker.app_id = app_id
    port = web_port or settings.consent.web_port
    from caselink.core.logs import configure

    configure(settings, role="gate")
    logging.getLogger("caselink.gate").info("consent gate for app %s starting; health http://%s:%d/health",
                                            settings.worker.app_id, settings.worker.web_host, port)
    serve(settings, port)
