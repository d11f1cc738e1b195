"""`caselink demo`: the whole flow on bundled synthetic data, end to end.

Starts a local Kafka (unless one is configured or already running), creates the topics, loads the
three sample agencies' extracts through their mappings, reads the events back from Kafka, links
them into citizens and shows who is known to more than one agency.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from caselink.kafka import admin_client, local_cluster, read_to_end
from caselink.settings import KafkaSettings, Settings, get_settings
from connectors.files import FileConnector, resolve_source_path
from connectors.mapping import load_mapping
from infra.kafka_runtime import LocalKafka
from infra.topics import DEAD_LETTER_TOPIC, caselink_topics, ensure_topics, person_events_topic
from linkage.index import CitizenIndex
from linkage.models import default_model
from schemas import default_serde

SAMPLES = Path(__file__).resolve().parent / "samples"
DEMO_AGENCIES = ("health", "social_care", "police")

console = Console()


def run_demo(keep_running: bool = False) -> None:
    settings = get_settings()
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
                            infra=settings.infra, agencies=settings.agencies, purposes=settings.purposes)
    else:
        from caselink.kafka import bootstrap_servers

        console.rule("[bold]1. Kafka")
        console.print(f"using the running broker at {bootstrap_servers(settings)}")
    try:
        _run(settings)
    finally:
        if started_here is not None and not keep_running:
            started_here.stop()
            console.print("[dim]Kafka stopped[/]")
        elif started_here is not None and started_here.state is not None:
            from caselink.kafka import state_file

            started_here.state.save(state_file(get_settings()))
            console.print(f"Kafka left running at {started_here.state.bootstrap_servers} (caselink infra down)")


def _run(settings: Settings) -> None:
    report = ensure_topics(admin_client(settings), caselink_topics(settings.agencies, settings.purposes,
                                                                   settings.kafka.default_partitions))
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
            _, letter = serde.decode(msg.value(), expect="DeadLetter")
            dl.add_row(letter["origin"], letter["stage"], letter["error"][:90])
        console.print(dl)

    console.rule("[bold]4. Link into citizens")
    model = default_model()
    index = CitizenIndex(model, keep_person=True)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    for key, event in sorted(latest.items(), key=lambda kv: kv[1]["emitted_at"]):
        if event["op"] == "DELETE":
            outcomes[index.delete(key, event["source_version"]).outcome] += 1
        else:
            outcomes[index.upsert(key, {**event["person"], "_cases": event["cases"]},
                                  event["source_version"]).outcome] += 1
    elapsed = time.monotonic() - started
    console.print(f"{len(latest)} records -> {len(index.citizens)} citizens in {elapsed * 1000:.0f} ms "
                  f"(model {model.version}); outcomes: {dict(outcomes)}")
    _show_citizens(index)


def _show_citizens(index: CitizenIndex, limit: int = 12) -> None:
    by_agencies: dict[str, list[str]] = defaultdict(list)
    for cid in index.citizens:
        agencies = sorted({m.split(":", 1)[0] for m in index.members(cid)})
        by_agencies[" + ".join(agencies)].append(cid)
    overview = Table("known to", "citizens")
    for combo, cids in sorted(by_agencies.items(), key=lambda kv: (-kv[0].count("+"), kv[0])):
        overview.add_row(combo, str(len(cids)))
    console.print(overview)
    shown = 0
    for combo, cids in sorted(by_agencies.items(), key=lambda kv: -kv[0].count("+")):
        if "+" not in combo:
            continue
        for cid in sorted(cids):
            if shown >= limit:
                return
            t = Table(title=f"citizen {cid} — known to {combo}", title_justify="left")
            for column in ("record", "name", "born", "postcode", "cases"):
                t.add_column(column)
            for member in index.members(cid):
                person = index.records[member].person or {}
                cases = ", ".join(f"{c['case_type']} ({c['status']})" for c in person.get("_cases", []))
                address = (person.get("addresses") or [{}])[0]
                t.add_row(member, f"{person.get('given_names') or ''} {person.get('family_name') or ''}",
                          person.get("date_of_birth") or "?", address.get("postcode") or "?", cases)
            console.print(t)
            shown += 1
