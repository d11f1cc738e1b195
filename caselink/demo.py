"""`caselink demo`: the whole flow on bundled synthetic data, end to end.

Starts a local Kafka (unless one is configured or already running), creates the topics, loads the
three sample agencies' extracts through their mappings, reads the events back from Kafka, runs the
stream processor (the Faust worker, in its own process) that links them into citizens, and shows
from ``caselink.linked-cases`` who is known to more than one agency, and why one link was made;
then what the consent gate releases to each purpose topic, before and after a consent and an
objection are recorded, with the audit trail.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from rich.console import Console
from rich.table import Table

from caselink.connectors.consent_events import consent_event, subject_from
from caselink.connectors.files import FileConnector, resolve_source_path
from caselink.connectors.mapping import load_mapping
from caselink.core.kafka import (
    admin_client,
    bootstrap_servers,
    consumer,
    idempotent_producer,
    local_cluster,
    read_to_end,
    state_file,
    watermarks,
)
from caselink.core.settings import KafkaSettings, Settings, get_settings
from caselink.infra.kafka_runtime import LocalKafka, free_port
from caselink.infra.registry_runtime import LocalRegistry
from caselink.infra.topics import (
    CONSENT_EVENTS_TOPIC,
    DEAD_LETTER_TOPIC,
    DISCLOSURES_TOPIC,
    LINK_DECISIONS_TOPIC,
    LINKED_CASES_TOPIC,
    caselink_topics,
    ensure_topics,
    person_events_topic,
    purpose_topic,
)
from caselink.ops import http_health, latest_linked_cases
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import read_letter

SAMPLES = Path(__file__).resolve().parent / "samples"
DEMO_AGENCIES = ("health", "social_care", "police")

console = Console()


def run_demo(keep_running: bool = False) -> None:
    settings = get_settings()
    # The demo links the bundled samples with the bundled model (a deployment trains its own).
    settings = settings.model_copy(update={"linkage": settings.linkage.model_copy(update={"bundled_model": True})})
    started_here: LocalKafka | None = None
    t0 = time.monotonic()
    if not settings.kafka.bootstrap_servers and local_cluster(settings) is None:
        console.rule("[bold]1. Kafka")
        directory = Path(tempfile.mkdtemp(prefix="caselink-demo-"))
        started_here = LocalKafka(settings.infra, directory, progress=lambda m: console.print(f"[dim]{m}[/]"))
        state = started_here.start()
        console.print(f"Apache Kafka {settings.infra.kafka_version} (KRaft) ready at {state.bootstrap_servers} "
                      f"in {time.monotonic() - t0:.1f}s; logs in {directory}")
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers),
                            infra=settings.infra, agencies=settings.agencies, purposes=settings.purposes,
                            linkage=settings.linkage)
    else:
        console.rule("[bold]1. Kafka")
        console.print(f"using the running broker at {bootstrap_servers(settings)}")
    registry_here = _ensure_registry(settings)
    if registry_here is not None and registry_here.state is not None:  # the settings, and so every process
        settings = settings.model_copy(update={"registry": settings.registry.model_copy(  # the demo starts, use it
            update={"url": registry_here.state.url})})
    try:
        _run(settings)
    finally:
        if registry_here is not None and not keep_running:
            registry_here.stop()
        if started_here is not None and not keep_running:
            started_here.stop()
            console.print("[dim]Kafka stopped[/]")
        elif started_here is not None and started_here.state is not None:

            started_here.state.save(state_file(get_settings()))
            console.print(f"Kafka left running at {started_here.state.bootstrap_servers} (caselink infra down)")


def _ensure_registry(settings: Settings) -> LocalRegistry | None:
    """The schema registry every value is framed against: the configured or running one, else one
    started for the demo (its URL in the environment, for the processes the demo starts)."""
    from caselink.infra.registry_runtime import local_registry_url

    if settings.registry.url or local_registry_url(settings):
        return None
    t0 = time.monotonic()
    registry = LocalRegistry(settings.infra, Path(tempfile.mkdtemp(prefix="caselink-demo-registry-")),
                             progress=lambda m: console.print(f"[dim]{m}[/]"))
    state = registry.start()
    os.environ["CASELINK_REGISTRY__URL"] = state.url
    console.print(f"Apicurio Registry {settings.infra.registry_version} ready at {state.url} "
                  f"in {time.monotonic() - t0:.1f}s")
    return registry


def _run(settings: Settings) -> None:
    from caselink.schemas.registry import ensure_subjects

    specs = caselink_topics(settings.agencies, settings.purposes, settings.kafka.default_partitions)
    report = ensure_topics(admin_client(settings), specs)
    ensure_subjects(default_serde().registry, specs)  # each topic's subject, BACKWARD compatible
    console.print(f"topics: {len(report.created)} created, {len(report.unchanged) + len(report.reconfigured)} "
                  "already there")

    console.rule("[bold]2. Agency connectors load their extracts")
    table = Table("agency", "file", "rows", "events", "dead letters", "rows/s")
    run_id = time.strftime("%Y%m%d%H%M%S")
    for agency in DEMO_AGENCIES:
        mapping = load_mapping(SAMPLES / "mappings" / f"{agency}.yaml")
        path = resolve_source_path(mapping)
        load = FileConnector(settings, mapping, name=f"demo-{run_id}:{agency}").load(path, resume=False)
        table.add_row(agency, path.name, str(load.rows), str(load.events), str(load.dead_letters),
                      f"{load.rows / max(load.seconds, 1e-9):,.0f}")
    console.print(table)

    console.rule("[bold]3. Read back from Kafka")
    serde = default_serde()
    messages = read_to_end(settings, [person_events_topic(a) for a in DEMO_AGENCIES])
    latest: dict[str, dict] = {}
    per_agency: Counter[str] = Counter()
    for msg in messages:
        _, event = serde.decode(msg.value(), expect="PersonEvent", topic=msg.topic(), partition=msg.partition(),
                                offset=msg.offset())
        per_agency[event["agency"]] += 1
        key = msg.key().decode()
        if key not in latest or latest[key]["source_version"] <= event["source_version"]:
            latest[key] = event
    summary = Table("topic", "events", "distinct records")
    for agency in DEMO_AGENCIES:
        distinct = sum(1 for k in latest if k.startswith(agency + ":"))
        summary.add_row(person_events_topic(agency), str(per_agency[agency]), str(distinct))
    console.print(summary)
    letters = read_to_end(settings, [DEAD_LETTER_TOPIC])
    if letters:
        dl = Table("dead letter origin", "stage", "error")
        for msg in letters[-10:]:
            letter = read_letter(msg, serde)
            dl.add_row(letter["origin"], letter["stage"], letter["error"][:90])
        console.print(dl)

    console.rule("[bold]4. The stream processor links them into citizens")
    expected = sum(per_agency.values())
    worker = start_worker(settings)
    gate = start_gate(settings)
    try:
        applied = wait_for_worker(worker, expected)
        wait_until_quiet(settings, [LINKED_CASES_TOPIC, LINK_DECISIONS_TOPIC])
        console.print(f"worker applied {applied} events; its /health: {worker.health()}")
        cases = latest_linked_cases(settings)
        console.print(f"{len(cases)} live citizens on {LINKED_CASES_TOPIC} (compacted, keyed by citizen id)")
        _show_citizens(cases)
        _show_one_decision(settings)
        console.rule("[bold]5. The consent gate releases what each purpose may see")
        _show_gate(settings, gate, cases)
    finally:
        gate.stop()
        worker.stop()


def _purpose_views(settings: Settings) -> dict[str, dict[str, dict]]:
    serde = default_serde()
    views: dict[str, dict[str, dict]] = {}
    for purpose in settings.purposes:
        latest: dict[str, dict | None] = {}
        for msg in read_to_end(settings, [purpose_topic(purpose)]):
            latest[msg.key().decode()] = None if msg.value() is None else serde.decode(msg.value())[1]
        views[purpose] = {k: v for k, v in latest.items() if v is not None}
    return views


def _gate_health(gate: WorkerProcess) -> dict:
    return http_health(f"http://127.0.0.1:{gate.port}/health")


def _wait_for_gate(settings: Settings, gate: WorkerProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gate.proc.poll() is not None:
            raise RuntimeError(f"the consent gate exited with {gate.proc.returncode}; see {gate.log_path}")
        if _gate_health(gate).get("caught_up"):
            break
        time.sleep(0.3)
    wait_until_quiet(settings, [DISCLOSURES_TOPIC])


def _show_gate(settings: Settings, gate_process: WorkerProcess, cases: dict[str, dict]) -> None:
    _wait_for_gate(settings, gate_process)
    gate = _gate_health(gate_process)
    console.print(f"`caselink gate` (its own process): policy {gate.get('policy')}; pseudonymisation key id "
                  f"{gate.get('pseudonym_key_id')}")
    _gate_table(settings, "before any consent is recorded")

    multi = sorted((c for c in cases.values() if len({m["agency"] for m in c["members"]}) > 1),
                   key=lambda c: c["citizen_id"])
    if len(multi) < 2:
        return
    consenting, objecting = multi[0], multi[1]
    health = next((m for m in consenting["members"] if m["agency"] == "health"), consenting["members"][0])
    record = f"{health['agency']}:{health['source_record_id']}"
    events = [
        consent_event(subject_from(record=record), "research", True, "demo: research clinic"),
        consent_event(subject_from(citizen=objecting["citizen_id"]), "*", False, "demo: objection letter"),
    ]
    producer = idempotent_producer(settings)
    serde = default_serde()
    for event in events:
        producer.produce(CONSENT_EVENTS_TOPIC, serde.encode("ConsentEvent", event, check=True),
                         key=event["consent_id"].encode())
    producer.flush(30)
    console.print(f"recorded: [bold]{record}[/] consents to research; citizen [bold]{objecting['citizen_id']}[/] "
                  "objects to every use of their records")
    time.sleep(1.0)
    wait_until_quiet(settings, [DISCLOSURES_TOPIC])
    views = _gate_table(settings, "after the consent and the objection")
    research = next(iter(views["research"].values()), None)
    if research:
        t = Table(title=f"what research sees of citizen {consenting['citizen_id']}: pseudonym "
                        f"{research['citizen_ref']} (key {research['key_id']})", title_justify="left")
        for column in ("agency", "record", "fields", "cases"):
            t.add_column(column, overflow="fold")
        for m in research["members"]:
            t.add_row(m["agency"], m["record_ref"][:20] + "…", json.dumps(m["fields"]),
                      ", ".join(c["case_type"] or "?" for c in m["cases"]))
        console.print(t)
    safeguarding = views["safeguarding"].get(objecting["citizen_id"])
    if safeguarding:
        console.print(f"safeguarding still sees {objecting['citizen_id']}: [italic]{safeguarding['basis']}[/]")
    disclosures = [serde.decode(m.value())[1] for m in read_to_end(settings, [DISCLOSURES_TOPIC])
                   if m.key() == objecting["citizen_id"].encode()]
    t = Table(title=f"caselink audit {objecting['citizen_id']}", title_justify="left")
    for column in ("purpose", "action", "agencies", "why"):
        t.add_column(column, overflow="fold")
    for d in disclosures:
        t.add_row(d["purpose"], d["action"], ", ".join(d["agencies"]), d["reason"] or "")
    console.print(t)


def _gate_table(settings: Settings, when: str) -> dict[str, dict[str, dict]]:
    views = _purpose_views(settings)
    t = Table(title=f"purpose topics {when}", title_justify="left")
    for column in ("topic", "citizens", "agencies", "pseudonymised"):
        t.add_column(column)
    for purpose, released in views.items():
        agencies = sorted({m["agency"] for v in released.values() for m in v["members"]})
        pseudo = "yes" if any(v["pseudonymised"] for v in released.values()) else "-"
        t.add_row(purpose_topic(purpose), str(len(released)), ", ".join(agencies), pseudo)
    console.print(t)
    return views


class WorkerProcess:
    """The Faust worker in its own process, as an operator would run it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path,
                 tokens: dict[str, str] | None = None) -> None:
        self.proc, self.port, self.log_path = proc, port, log_path
        self.tokens = tokens or {}  # role -> the web token start_worker made for it (none if set outside)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def get(self, path: str, role: str = "operator", timeout: float = 5.0) -> dict[str, Any]:
        """A JSON document from the web API, signed in with the token made for ``role``."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers={"Authorization": f"Bearer {self.tokens[role]}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(command: str, settings: Settings, folder: Path, port: int, env: dict[str, str],
           args: tuple[str, ...] = (), unset: tuple[str, ...] = ()) -> WorkerProcess:
    """``caselink <command> <args>`` in its own process, logging to ``folder/<command>.log``;
    ``unset``: variables of this process's environment the child must not inherit."""
    folder.mkdir(parents=True, exist_ok=True)
    from caselink.schemas.registry import registry_url

    env = {**{k: v for k, v in os.environ.items() if k not in unset},
           "CASELINK_KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers(settings),
           "CASELINK_REGISTRY__URL": registry_url(settings), **env}
    log_path = folder / f"{command}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "caselink.cli", command, *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return WorkerProcess(proc, port, log_path)


def start_worker(settings: Settings, app_id: str | None = None, data_dir: Path | None = None,
                 normaliser_processes: int | None = None, snapshot_interval_s: float | None = None,
                 sharded: bool | None = None) -> WorkerProcess:
    """`caselink worker` in its own process; ``sharded``: as the resolver of a sharded index
    (``shards.enabled``), beside `caselink shard` processes (``start_shard``)."""
    port = free_port()
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="caselink-worker-"))
    w = settings.worker
    processes = w.normaliser_processes if normaliser_processes is None else normaliser_processes
    snapshots = w.snapshot_interval_s if snapshot_interval_s is None else snapshot_interval_s
    env = {"CASELINK_WORKER__WEB_PORT": str(port), "CASELINK_WORKER__DATA_DIR": str(data_dir),
           "CASELINK_WORKER__APP_ID": app_id or w.app_id,
           "CASELINK_WORKER__NORMALISER_PROCESSES": str(processes),
           "CASELINK_WORKER__SNAPSHOT_INTERVAL_S": str(snapshots),
           "CASELINK_SHARDS__ENABLED": str(settings.shards.enabled if sharded is None else sharded).lower(),
           "CASELINK_SHARDS__PARTITIONS": str(settings.shards.partitions),
           # The worker links as the caller does: the same model.
           "CASELINK_LINKAGE__BUNDLED_MODEL": str(settings.linkage.bundled_model).lower(),
           "CASELINK_LINKAGE__MODEL_PATH": str(settings.linkage.model_path)}
    tokens: dict[str, str] = {}
    if not os.environ.get("CASELINK_WEB__TOKENS"):
        # Throwaway credentials, one per role, so the web API can be used; real deployments set
        # their own per person (docs/operations.md).
        tokens = {role: secrets.token_urlsafe(24) for role in ("reader", "reviewer", "operator")}
        env["CASELINK_WEB__TOKENS"] = json.dumps({f"demo-{role}": {"role": role, "token": token}
                                                  for role, token in tokens.items()})
    worker = _spawn("worker", settings, data_dir, port, env)
    worker.tokens = tokens
    return worker


def start_shard(settings: Settings, tier: str, app_id: str | None = None, instance_id: str | None = None,
                session_timeout_s: float | None = None, data_dir: Path | None = None,
                snapshot_interval_s: float | None = None) -> WorkerProcess:
    """`caselink shard <tier>` in its own process, linking with the caller's model; with
    ``instance_id``, a static member of its tier's group (``shards.instance_id``); with
    ``data_dir``, keeping snapshots there (``shards.data_dir``)."""
    port = free_port()
    shards = settings.shards
    env = {"CASELINK_SHARDS__WEB_PORT": str(port), "CASELINK_WORKER__APP_ID": app_id or settings.worker.app_id,
           "CASELINK_SHARDS__PARTITIONS": str(shards.partitions),
           "CASELINK_SHARDS__SESSION_TIMEOUT_S": str(session_timeout_s or shards.session_timeout_s),
           "CASELINK_LINKAGE__BUNDLED_MODEL": str(settings.linkage.bundled_model).lower(),
           "CASELINK_LINKAGE__MODEL_PATH": str(settings.linkage.model_path)}
    if instance_id:
        env["CASELINK_SHARDS__INSTANCE_ID"] = instance_id
    if data_dir is not None:
        env["CASELINK_SHARDS__DATA_DIR"] = str(data_dir)
    if snapshot_interval_s is not None:
        env["CASELINK_SHARDS__SNAPSHOT_INTERVAL_S"] = str(snapshot_interval_s)
    return _spawn("shard", settings, Path(tempfile.mkdtemp(prefix=f"caselink-{tier}-shard-")), port, env, (tier,),
                  unset=() if instance_id else ("CASELINK_SHARDS__INSTANCE_ID",))


def start_gate(settings: Settings, app_id: str | None = None, instance_id: str | None = None,
               session_timeout_s: float | None = None) -> WorkerProcess:
    """`caselink gate` in its own process, beside the worker; with ``instance_id``, a static
    member among partitioned gates (``consent.instance_id``)."""
    port = free_port()
    env = {"CASELINK_CONSENT__WEB_PORT": str(port), "CASELINK_WORKER__APP_ID": app_id or settings.worker.app_id}
    if instance_id:
        env["CASELINK_CONSENT__INSTANCE_ID"] = instance_id
    if session_timeout_s:
        env["CASELINK_CONSENT__SESSION_TIMEOUT_S"] = str(session_timeout_s)
    unset = () if instance_id else ("CASELINK_CONSENT__INSTANCE_ID",)  # each process its own name, or none
    if not os.environ.get("CASELINK_CONSENT__PSEUDONYM_KEY"):
        # A throwaway key, so the pseudonymised purposes have something to show; real deployments
        # set their own, kept in a secret store.
        env["CASELINK_CONSENT__PSEUDONYM_KEY"] = secrets.token_urlsafe(32)
        env["CASELINK_CONSENT__PSEUDONYM_KEY_ID"] = "demo"
    return _spawn("gate", settings, Path(tempfile.mkdtemp(prefix="caselink-gate-")), port, env, unset=unset)


def wait_for_worker(worker: WorkerProcess, expected: int, timeout: float = 120.0) -> int:
    """Until the worker has applied ``expected`` link-input messages."""
    deadline = time.monotonic() + timeout
    applied = -1
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            tail = [line for line in worker.log_path.read_text(errors="replace").splitlines()
                    if not line.startswith("%")][-15:]
            raise RuntimeError(f"the worker exited with {worker.proc.returncode}; see {worker.log_path}:\n"
                               + "\n".join(tail))
        try:
            applied = int(worker.health()["applied"])
            if applied >= expected:
                return applied
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the worker applied {applied} of {expected} events in {timeout:.0f}s; see {worker.log_path}")


def wait_until_quiet(settings: Settings, topics: list[str], quiet_s: float = 1.5, timeout: float = 60.0) -> None:
    """Until nothing new has arrived on ``topics`` for ``quiet_s`` (the worker's last sends are in)."""

    c = consumer(settings, "caselink-quiet-probe")
    try:
        md = c.list_topics(timeout=10)
        parts = [TopicPartition(t, p) for t in topics for p in md.topics[t].partitions]
        last, since = None, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = [watermarks(c, tp)[1] for tp in parts]
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.2)
    finally:
        c.close()


def _show_citizens(cases: dict[str, dict], limit: int = 6) -> None:
    by_agencies: dict[str, list[dict]] = defaultdict(list)
    for case in cases.values():
        agencies = sorted({m["agency"] for m in case["members"]})
        by_agencies[" + ".join(agencies)].append(case)
    overview = Table("known to", "citizens")
    for combo, group in sorted(by_agencies.items(), key=lambda kv: (-kv[0].count("+"), kv[0])):
        overview.add_row(combo, str(len(group)))
    console.print(overview)
    shown = 0
    for combo, group in sorted(by_agencies.items(), key=lambda kv: (-kv[0].count("+"), kv[0])):
        if "+" not in combo:
            continue
        for case in sorted(group, key=lambda c: c["citizen_id"]):
            if shown >= limit:
                return
            t = Table(title=f"citizen {case['citizen_id']} (v{case['version']}) — known to {combo}",
                      title_justify="left")
            for column in ("record", "name", "born", "postcode", "cases"):
                t.add_column(column)
            for m in case["members"]:
                p = m["person"]
                address = (p["addresses"] or [{}])[0]
                cases_text = ", ".join(f"{c['case_type']} ({c['status']})" for c in m["cases"])
                t.add_row(f"{m['agency']}:{m['source_record_id']}",
                          f"{p['given_names'] or ''} {p['family_name'] or ''}", p["date_of_birth"] or "?",
                          address.get("postcode") or "?", cases_text)
            console.print(t)
            shown += 1


def _show_one_decision(settings: Settings) -> None:
    """Why two records were linked: the per-field weights of one cross-agency decision."""
    serde = default_serde()
    for msg in reversed(read_to_end(settings, [LINK_DECISIONS_TOPIC])):
        _, d = serde.decode(msg.value(), expect="LinkDecision")
        linked = [c for c in d["candidates"] if c["record_key"].split(":")[0] != d["record_key"].split(":")[0]]
        if d["outcome"] == "LINKED" and linked:
            c = linked[0]
            t = Table(title=f"why {d['record_key']} joined {d['citizen_id']} (compared with {c['record_key']}: "
                            f"match weight {c['match_weight']:.1f}, probability {c['match_probability']:.4f})",
                      title_justify="left")
            t.add_column("field")
            t.add_column("level")
            t.add_column("weight", justify="right")
            for f in c["field_weights"]:
                t.add_row(f["field"], f["level"], f"{f['weight']:+.2f}")
            console.print(t)
            return
