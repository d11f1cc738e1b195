"""What operators ask of a running caselink: health and lag, replays, dead letters.

Plain functions over the Kafka admin and consumer APIs, returning data; the CLI (``cli_ops``)
prints them for people or as JSON.
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from caselink.connectors.base import ConnectorSink, person_event
from caselink.connectors.mapping import RowError, load_mapping
from caselink.connectors.readers import SOURCE_HEADER_HEADER, SOURCE_KIND_HEADER, parse_csv_row
from caselink.core.cluster import ClusterState, pid_alive
from caselink.core.kafka import (
    admin_client,
    consumer,
    idempotent_producer,
    produce,
    read_to_end,
    state_file,
    watermarks,
)
from caselink.core.settings import Settings
from caselink.infra.topics import DEAD_LETTER_TOPIC, DLQ_REDRIVEN_TOPIC, LINKED_CASES_TOPIC
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import TRUNCATED_MARK, read_letter

EPHEMERAL_GROUPS = ("caselink-reader-", "caselink-quiet-probe", "caselink-ops-")


# --------------------------------------------------------------------------- linked cases
def latest_linked_cases(settings: Settings) -> dict[str, dict]:
    """The last LinkedCase published for every citizen id (retired ones, whose last value is a tombstone, left out)."""
    serde = default_serde()
    latest: dict[str, dict | None] = {}
    for msg in read_to_end(settings, [LINKED_CASES_TOPIC]):
        key = msg.key().decode()
        latest[key] = None if msg.value() is None else serde.decode(msg.value(), expect="LinkedCase")[1]
    return {k: v for k, v in latest.items() if v is not None}



# --------------------------------------------------------------------------- status
@dataclass
class GroupLag:
    group: str
    state: str
    partitions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p["lag"] for p in self.partitions)


def group_lags(settings: Settings, timeout: float = 10.0) -> list[GroupLag]:
    """Committed offset and lag for every partition of every (non-ephemeral) consumer group."""
    admin = admin_client(settings)
    listed = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout)
    groups = sorted((g for g in listed.valid if not g.group_id.startswith(EPHEMERAL_GROUPS)),
                    key=lambda g: g.group_id)
    probe = consumer(settings, "caselink-ops-lag")
    out = []
    try:
        for g in groups:
            future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g.group_id)],
                                                       request_timeout=timeout)[g.group_id]
            lag = GroupLag(g.group_id, str(getattr(g.state, "name", g.state)))
            for tp in future.result(timeout=timeout).topic_partitions:
                if tp.offset < 0:
                    continue
                _lo, hi = watermarks(probe, TopicPartition(tp.topic, tp.partition), timeout)
                lag.partitions.append({"topic": tp.topic, "partition": tp.partition, "committed": tp.offset,
                                       "end": hi, "lag": max(0, hi - tp.offset)})
            lag.partitions.sort(key=lambda p: (p["topic"], p["partition"]))
            out.append(lag)
    finally:
        probe.close()
    return out


@dataclass
class ShardTier:
    """One tier of the sharded index as its consumer group shows it: who serves which key
    partitions, and how far in the link input every partition is answered."""

    tier: str
    group: str
    state: str
    members: list[dict[str, Any]]  # instance_id (None: unnamed), client_id, host, partitions
    unowned: list[int]  # key partitions no member holds
    answered_to: int | None  # the least position any partition has committed (None: none yet)
    link_input_end: int

    @property
    def lag(self) -> int:
        return self.link_input_end - (self.answered_to or 0)


def shard_tiers(settings: Settings, timeout: float = 10.0) -> list[ShardTier]:
    """Both tiers' groups (``<app id>-blocks-shards``, ``<app id>-records-shards``): members, the
    partitions nobody holds, and the position every partition's last commit names. The groups
    commit offset 0 of ``caselink.link-shards`` with the position in the metadata, so their
    plain lag says nothing; this reads the metadata."""
    from caselink.infra.topics import LINK_INPUT_TOPIC, LINK_SHARDS_TOPIC
    from caselink.streams.shard_loop import TIERS, answered_position, group_id

    admin = admin_client(settings)
    groups = [group_id(settings, tier) for tier in TIERS]
    described = admin.describe_consumer_groups(groups, request_timeout=timeout)
    end = topic_ends(settings, [LINK_INPUT_TOPIC], timeout).get(LINK_INPUT_TOPIC, 0)
    out = []
    for tier, group in zip(TIERS, groups, strict=True):
        description = described[group].result(timeout=timeout)
        members = [{"instance_id": m.group_instance_id, "client_id": m.client_id, "host": m.host,
                    "partitions": sorted(tp.partition for tp in m.assignment.topic_partitions
                                         if tp.topic == LINK_SHARDS_TOPIC)}
                   for m in description.members]
        members.sort(key=lambda m: (m["instance_id"] or "", m["partitions"]))
        held = {p for m in members for p in m["partitions"]}
        committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                     request_timeout=timeout)[group].result(timeout=timeout)
        positions = [answered_position(tp) for tp in committed.topic_partitions or []
                     if tp.topic == LINK_SHARDS_TOPIC and tp.offset >= 0]
        out.append(ShardTier(tier, group, str(getattr(description.state, "name", description.state)), members,
                             sorted(set(range(settings.shards.partitions)) - held),
                             min(positions) if len(positions) == settings.shards.partitions else
                             (0 if positions else None), end))
    return out


def shard_problems(tiers: list[ShardTier], expected: bool, max_lag: int) -> list[str]:
    """What ``caselink status`` calls unhealthy about the tiers; ``expected``: the deployment is
    sharded (``shards.enabled``), so a tier without shards is a fault, not a choice."""
    problems = []
    for t in tiers:
        if not t.members:
            if expected:
                problems.append(f"no {t.tier} shard is running (group {t.group}): the resolver waits for its answers")
            continue
        if t.unowned and t.state == "STABLE":
            problems.append(f"{t.tier} shards: key partitions {_ranges(t.unowned)} have no shard")
        if t.lag > max_lag:
            problems.append(f"{t.tier} shards: answered to {t.answered_to or 0:,}, "
                            f"{t.lag:,} link-input messages behind")
    return problems


def _ranges(numbers: list[int]) -> str:
    """1, 2, 3, 7 -> '1-3, 7'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def topic_ends(settings: Settings, topics: list[str], timeout: float = 10.0) -> dict[str, int]:
    """Sum of the high watermarks of each topic (messages ever written, for rates)."""
    c = consumer(settings, "caselink-ops-ends")
    try:
        md = c.list_topics(timeout=timeout)
        return {t: sum(watermarks(c, TopicPartition(t, p), timeout)[1] for p in md.topics[t].partitions)
                for t in topics if t in md.topics}
    finally:
        c.close()


def http_health(url: str, timeout: float = 3.0, cafile: Any = None) -> dict[str, Any]:
    """A /health document; a 503 still carries its body; no answer is ``status: unreachable``.
    ``cafile``: the certificate to trust for an https URL (the worker's own, when self-signed)."""

    context = ssl.create_default_context(cafile=str(cafile)) if cafile and url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return {"url": url, **json.loads(response.read())}
    except urllib.error.HTTPError as exc:
        return {"url": url, **json.loads(exc.read() or b"{}")}
    except (OSError, ValueError) as exc:
        return {"url": url, "status": "unreachable", "error": str(exc)}


LOW_DISK_BYTES = 256 * 1024 * 1024  # a broker data directory with less free than this is reported


def local_broker_problems(settings: Settings) -> list[str]:
    """What is wrong with the broker `caselink infra up` started, read from the machine: nodes down
    (with the last storage error in their log: a full disk says so), data directories nearly full."""

    path = state_file(settings)
    if not path.exists():
        return []
    problems = []
    for node in ClusterState.load(path).nodes:
        data = Path(node.directory) / "data"
        try:
            free = shutil.disk_usage(data).free
        except OSError:
            free = None
        if not pid_alive(node.pid):
            why = _storage_error(node.log_path, node.stdout_path)
            problems.append(f"local broker node {node.node_id} is down{why}")
        if free is not None and free < LOW_DISK_BYTES:
            problems.append(f"local broker node {node.node_id}: its data directory {data} has {free:,} bytes free "
                            "(free space, then restart the node: `caselink infra down && caselink infra up`)")
    return problems


def _storage_error(*logs: Any) -> str:
    """The last line of the logs that says why storage failed, if one does."""
    words = ("No space left on device", "KafkaStorageException", "offline log dir", "log dirs have failed")
    for log in logs:
        try:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if any(w in ln for w in words)]
        except OSError:
            continue
        if lines:
            return f": {lines[-1].strip()[:300]}"
    return ""


def worker_health(settings: Settings, timeout: float = 3.0) -> dict[str, Any]:
    return http_health(f"{settings.web.scheme}://{settings.worker.web_host}:{settings.worker.web_port}/health",
                       timeout, settings.web.tls_certfile)


def gate_health(settings: Settings, timeout: float = 3.0) -> dict[str, Any]:
    """The consent gate's /health: its own process's (``caselink gate``, plain HTTP on
    ``consent.web_port``), or the worker's ``gate`` part when it runs there (``consent.in_worker``)."""
    if settings.consent.in_worker:
        worker = worker_health(settings, timeout)
        gate = worker.get("gate")
        if gate is None:
            return {"url": worker["url"], "status": worker.get("status", "unreachable"), "error": worker.get("error")}
        return {"url": worker["url"], **gate, "status": worker.get("status"), "reason": worker.get("reason")}
    return http_health(f"http://{settings.worker.web_host}:{settings.consent.web_port}/health", timeout)


def records_in_index(settings: Settings, keys: set[str],
                     progress: Callable[[int, int], None] | None = None) -> set[str]:
    """Which of ``keys`` (agency:record_id) a live citizen on caselink.linked-cases holds now."""
    from caselink.core.kafka import read_to_end
    from caselink.infra.topics import LINKED_CASES_TOPIC
    from caselink.schemas import default_serde

    serde = default_serde()
    latest: dict[bytes, bytes | None] = {}
    for msg in read_to_end(settings, [LINKED_CASES_TOPIC], progress=progress):
        latest[msg.key()] = msg.value()
    found = set()
    for value in latest.values():
        if value is None:
            continue
        case = serde.decode(value, expect="LinkedCase")[1]
        found |= {f"{m['agency']}:{m['source_record_id']}" for m in case["members"]} & keys
        if found == keys:
            break
    return found


# --------------------------------------------------------------------------- replay
@dataclass
class ReplayPlan:
    topic: str
    target: str
    start: dict[int, int]  # partition -> first offset to replay
    end: dict[int, int]  # partition -> current end

    @property
    def count(self) -> int:
        return sum(max(0, self.end[p] - self.start[p]) for p in self.start)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``2026-11-01T00:00`` (UTC unless an offset is given) or a duration such as ``90m``, ``2h``, ``7d``."""
    now = now or datetime.now(UTC)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    if value[:-1].replace(".", "", 1).isdigit() and value[-1] in units:
        return now - timedelta(**{units[value[-1]]: float(value[:-1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither an ISO time nor a duration like 30m, 2h, 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_offsets(text: str) -> dict[int, int]:
    """``0@1200,2@998`` (partition@offset, as `tail` and `dlq` print message ids; ``0:1200`` is
    accepted too) as {partition: offset}; ValueError saying what is expected."""
    out: dict[int, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        pieces = part.replace(":", "@").split("@")
        if len(pieces) != 2 or not all(x.strip().isdigit() for x in pieces):
            raise ValueError(f"--offsets: {part!r} is not partition@offset (two whole numbers, e.g. 0@1200,2@998)")
        out[int(pieces[0])] = int(pieces[1])
    if not out:
        raise ValueError("--offsets: give partition@offset pairs, e.g. 0@1200,2@998")
    return out


def plan_replay(settings: Settings, topic: str, since: datetime | None = None,
                offsets: dict[int, int] | None = None, target: str | None = None,
                timeout: float = 10.0) -> ReplayPlan:
    """Where a replay of ``topic`` would start (by time or explicit offsets) and end (now)."""
    c = consumer(settings, "caselink-ops-replay")
    try:
        md = c.list_topics(timeout=timeout)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ValueError(f"no topic {topic}")
        partitions = sorted(md.topics[topic].partitions)
        ends = {p: watermarks(c, TopicPartition(topic, p), timeout)[1] for p in partitions}
        if offsets is not None:
            unknown = set(offsets) - set(partitions)
            if unknown:
                raise ValueError(f"{topic} has no partition(s) {sorted(unknown)}")
            start = {p: offsets.get(p, ends[p]) for p in partitions}
        elif since is not None:
            ms = int(since.timestamp() * 1000)
            found = c.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions], timeout=timeout)
            start = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found}
        else:
            start = {p: watermarks(c, TopicPartition(topic, p), timeout)[0] for p in partitions}
        return ReplayPlan(topic, target or topic, start, ends)
    finally:
        c.close()


def read_range(settings: Settings, topic: str, start: dict[int, int], end: dict[int, int],
               timeout: float = 30.0) -> Iterator[Any]:
    """The messages of ``topic`` in [start, end) per partition."""
    wanted = {p: (start[p], end[p]) for p in start if end[p] > start[p]}
    if not wanted:
        return
    c = consumer(settings, "caselink-ops-read")
    try:
        c.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in wanted.items()])
        remaining = dict(wanted)
        deadline = time.monotonic() + timeout
        while remaining:
            batch = c.consume(1000, timeout=0.5)
            if not batch and time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} partitions {sorted(remaining)} within {timeout}s")
            for msg in batch:
                if msg.error():
                    continue
                p, offset = msg.partition(), msg.offset()
                if p in remaining and offset is not None and offset < remaining[p][1]:
                    deadline = time.monotonic() + timeout
                    yield msg
                    if offset + 1 >= remaining[p][1]:
                        del remaining[p]
            for tp in c.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= remaining[tp.partition][1]:
                    del remaining[tp.partition]
    finally:
        c.close()


def replay(settings: Settings, plan: ReplayPlan, progress: Callable[[int], None] | None = None) -> int:
    """Re-publish the planned messages (key, value, timestamp) to the target topic, in order per partition.

    Safe into the live pipeline: every event keeps its ``event_id`` and ``source_version``, which
    the linker uses to ignore what it has already applied.
    """
    producer = idempotent_producer(settings, **{"linger.ms": 20})
    errors: list[str] = []
    sent = 0
    for msg in read_range(settings, plan.topic, plan.start, plan.end):
        headers = [*(msg.headers() or []), ("caselink-replayed-from",
                                             f"{msg.topic()}[{msg.partition()}]@{msg.offset()}".encode())]
        partition = msg.partition() if plan.target == plan.topic else -1
        produce(producer, plan.target, msg.key(), msg.value(),
                lambda err, _m: errors.append(str(err)) if err else None,
                headers=headers, timestamp=msg.timestamp()[1], partition=partition)
        sent += 1
        if progress and sent % 1000 == 0:
            progress(sent)
    if producer.flush(60) or errors:
        raise RuntimeError(f"replay not fully acknowledged: {errors[:3]}")
    if progress:
        progress(sent)
    return sent


# --------------------------------------------------------------------------- dead letters
def dead_letters(settings: Settings, progress: Callable[[int, int], None] | None = None
                 ) -> list[tuple[Any, dict[str, Any]]]:
    """Every dead letter now on the topic, with its message (for its offset)."""
    serde = default_serde()
    return [(m, read_letter(m, serde)) for m in read_to_end(settings, [DEAD_LETTER_TOPIC], progress=progress)]


def letter_id(msg: Any) -> str:
    return f"{msg.partition()}@{msg.offset()}"


def summarise(letters: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    counts = Counter((d["stage"], d["error_type"], d["origin_topic"] or "(file)") for _m, d in letters)
    return [{"stage": s, "error_type": e, "origin_topic": t, "count": n}
            for (s, e, t), n in counts.most_common()]


def redriven(settings: Settings) -> set[str]:
    done = set()
    for msg in read_to_end(settings, [DLQ_REDRIVEN_TOPIC]):
        if msg.value() is not None:
            done.add(msg.key().decode())
    return done


class RedriveError(ValueError):
    """A dead letter that cannot be re-driven as it is (the reason says why)."""


def letter_agency(msg: Any) -> str | None:
    """The agency whose connector wrote a dead letter (its ``caselink.dead-letter.agency`` header), if it says."""
    from caselink.connectors.base import AGENCY_HEADER

    value = dict(msg.headers() or []).get(AGENCY_HEADER)
    return value.decode() if value else None


def check_letter_agency(msg: Any, agency: str, mapping_path: str) -> None:
    """A connector row goes back only through a mapping of the agency whose connector wrote it."""
    origin = letter_agency(msg)
    if origin is None:
        raise RedriveError("it does not say which agency's connector wrote it (written before caselink recorded "
                           "that): load the fixed file again instead")
    if origin != agency:
        raise RedriveError(f"a row of {origin}'s connector, and {mapping_path} maps {agency}: give {origin}'s "
                           "fixed mapping")


def source_row(msg: Any, letter: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """A connector dead letter's row as the mapping takes it.

    The letter holds the row's own bytes; a CSV row is read under the header line its message
    carries (``caselink-source-header``). Letters from before that (and JSONL rows) are JSON.
    """

    if TRUNCATED_MARK in letter["error"]:
        raise RedriveError("its payload was truncated (the row was too long to keep); fix the file and load it again")
    headers = dict(msg.headers() or [])
    encoding = str(source.get("encoding", "utf-8"))
    if headers.get(SOURCE_KIND_HEADER) == b"csv":
        return parse_csv_row(headers.get(SOURCE_HEADER_HEADER, b""), letter["payload"],
                             str(source.get("delimiter", ",")), encoding)
    try:
        row = json.loads(letter["payload"].decode(encoding if headers.get(SOURCE_KIND_HEADER) else "utf-8"))
    except (UnicodeDecodeError, RecursionError, LookupError) as exc:
        raise RedriveError(f"not readable as a JSON row: {exc}") from None
    if not isinstance(row, dict):
        raise RedriveError("not a JSON object")
    return row


def redrive(settings: Settings, letters: list[tuple[Any, dict[str, Any]]], mapping_path: str | None = None,
            dry_run: bool = False) -> dict[str, Any]:
    """Send dead letters back where they came from, once each.

    Events that failed in the pipeline (their payload is the original event) go back to their
    origin topic unchanged; rows a connector could not map are mapped again with ``mapping_path``
    (the fixed mapping) and published as PersonEvents. Each re-driven letter is recorded on
    ``caselink.dlq-redriven`` so a second redrive skips it.
    """

    done = redriven(settings)
    mapping = load_mapping(mapping_path) if mapping_path else None
    report: dict[str, Any] = {"redriven": [], "skipped_already": [], "failed": []}
    producer = idempotent_producer(settings)
    sink = ConnectorSink(settings, "redrive", mapping.agency) if mapping else None
    for msg, letter in letters:
        lid = letter_id(msg)
        if lid in done:
            report["skipped_already"].append(lid)
            continue
        try:
            if letter["origin_topic"]:
                target, key, value = letter["origin_topic"], letter["origin_key"], letter["payload"]
            else:
                if mapping is None:
                    raise RedriveError("a connector row: give the fixed mapping with --mapping")
                check_letter_agency(msg, mapping.agency, mapping.path)
                row = source_row(msg, letter, mapping.source)
                try:
                    mapped = mapping.apply(row)
                except RowError as exc:
                    raise RedriveError(f"still cannot be mapped: {exc}") from None
                now = datetime.now(UTC)
                event = person_event(mapping, mapped, int(now.timestamp() * 1000),
                                     {"connector": "redrive", "dead_letter": lid}, now)
                target = None
        except (RedriveError, ValueError) as exc:
            report["failed"].append({"id": lid, "reason": str(exc)})
            continue
        if not dry_run:
            if target is None:
                assert sink is not None
                sink.send_event(event)
                sink.flush()
            else:
                producer.produce(target, value, key=key)
            producer.produce(DLQ_REDRIVEN_TOPIC, json.dumps({"at": datetime.now(UTC).isoformat()}).encode(),
                             key=lid.encode())
            if producer.flush(30):
                raise KafkaException("redrive not acknowledged by Kafka")
        report["redriven"].append(lid)
    return report
