"""The schema registry every caselink value is framed against, and the subjects caselink keeps there.

Why a registry: with one, a stock consumer (kafka-console-consumer with an Avro deserializer,
ksqlDB, Flink's ``avro-confluent``, a Kafka Connect converter, confluent-kafka's
``AvroDeserializer``) reads caselink's topics; with Avro single-object encoding only caselink
could. The wire format is the Confluent one: a zero byte, the 4-byte big-endian schema id, then
the Avro body.

Any registry with the Confluent-compatible REST API serves: locally Apicurio Registry 3.3.3
(``/apis/ccompat/v7``, started by ``caselink infra up``), in production whatever the cluster's
owners run (``registry.url``, with basic auth from the environment). The client is
confluent-kafka's own ``SchemaRegistryClient``, which caches ids and schemas.

Subjects: each topic's values under ``<topic>-value`` (Confluent's TopicNameStrategy), except a
topic that carries more than one record type (the link input: PersonEvents and reviewers'
ReviewDecisions), whose subjects are ``<topic>-<record full name>`` (TopicRecordNameStrategy).
The serde itself, which does not know the topic it writes to, takes a schema's id from the
record's own subject (``<record full name>``, RecordNameStrategy); a registry gives one schema
the same id under every subject (checked on Apicurio 3.3.3: the ccompat ids are content ids), so
a message's id is the same whichever subject it was looked up under. Every subject is set to
BACKWARD compatibility, so the registry refuses a new version that cannot read the data already
written; ``caselink schemas check`` (schemas/compat.py) stays the CI gate that catches it earlier.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from caselink.core.settings import Settings

COMPATIBILITY = "BACKWARD"
CONFLUENT_MAGIC = 0


class RegistryError(RuntimeError):
    """The registry could not be reached or refused a request; the message says which and why."""


class SchemaNotFoundError(RegistryError):
    """The registry has no schema with this id (the message's framing names an id nobody registered)."""


class SchemaRegistry(Protocol):
    """What caselink needs of a registry."""

    url: str

    def register(self, subject: str, schema: str) -> int:
        """The id of ``schema`` under ``subject``, registering it as the subject's next version if new."""
        ...

    def schema_text(self, schema_id: int) -> str:
        """The schema registered under ``schema_id``."""
        ...

    def set_compatibility(self, subject: str, level: str) -> None: ...


REQUEST_TIMEOUT_S = 30


class HttpRegistry:
    """A Confluent-compatible registry over HTTP, through confluent-kafka's client."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 ssl_ca_location: str | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        # A timeout: without one a request the registry never answers (seen once from Apicurio in
        # the test suite) holds the stage for ever; the client retries, then the stage fails loudly.
        conf: dict[str, Any] = {"url": url, "timeout": REQUEST_TIMEOUT_S}
        if username:
            conf["basic.auth.user.info"] = f"{username}:{password or ''}"
        if ssl_ca_location:
            conf["ssl.ca.location"] = ssl_ca_location
        self.url = url
        self._client = SchemaRegistryClient(conf)
        self._compatibility_set: set[str] = set()

    def register(self, subject: str, schema: str) -> int:
        from confluent_kafka.schema_registry import Schema

        try:
            return int(self._client.register_schema(subject, Schema(schema, "AVRO")))
        except Exception as exc:  # noqa: BLE001 - the client raises its own and httpx's errors
            raise RegistryError(f"the schema registry at {self.url} refused {subject}: {_reason(exc)}") from None

    def schema_text(self, schema_id: int) -> str:
        try:
            return str(self._client.get_schema(schema_id).schema_str)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "http_status_code", None) == 404:
                raise SchemaNotFoundError(f"schema id {schema_id} is not in the registry at {self.url}") from None
            raise RegistryError(f"the schema registry at {self.url} could not give schema {schema_id}: "
                                f"{_reason(exc)}") from None

    def set_compatibility(self, subject: str, level: str) -> None:
        if subject in self._compatibility_set:
            return
        for attempt in range(3):
            try:
                self._client.set_compatibility(subject, level)
                break
            except Exception as exc:  # noqa: BLE001
                # Apicurio answers 409 ("a rule named 'COMPATIBILITY' already exists") when another
                # process created the subject's rule between its lookup and its create (two gate
                # processes starting together did): the rule exists now, so set it again.
                if getattr(exc, "http_status_code", None) == 409 and attempt < 2:
                    time.sleep(0.1)
                    continue
                raise RegistryError(f"the schema registry at {self.url} refused {level} for {subject}: "
                                    f"{_reason(exc)}") from None
        self._compatibility_set.add(subject)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]


def full_name(raw: dict[str, Any]) -> str:
    name = str(raw["name"])
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def topic_subjects(topic: str, record_names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(subject, caselink schema name) for each record type ``topic`` carries."""
    from caselink.schemas.serde import default_serde

    if len(record_names) == 1:
        return [(f"{topic}-value", record_names[0])]
    serde = default_serde()
    return [(f"{topic}-{full_name(serde.schema(n).raw)}", n) for n in record_names]


def register_lineage(registry: SchemaRegistry, subject: str, name: str) -> int:
    """Register a caselink schema's released versions (``schemas/history``, oldest first), then the
    current one, under ``subject`` with BACKWARD compatibility; the current version's id.

    The history goes first so that the registry's own compatibility check compares a new version
    with what was really released, as the CI gate does."""
    from caselink.schemas.serde import HISTORY_DIR, default_serde

    registry.set_compatibility(subject, COMPATIBILITY)
    current = default_serde().schema(name)
    text = json.dumps(current.raw)
    for old in sorted((HISTORY_DIR / name).glob("*.avsc"), key=_version_key):
        old_text = json.dumps(json.loads(old.read_text()))
        if old_text != text:
            registry.register(subject, old_text)
    return registry.register(subject, text)


def _version_key(path: Path) -> tuple[int, ...]:
    """``v2`` and ``0.3`` alike, compared as numbers (``v10`` after ``v9``)."""
    return tuple(int(p) if p.isdigit() else 0 for p in path.stem.lstrip("v").split("."))


def ensure_subjects(registry: SchemaRegistry, specs: Any) -> list[str]:
    """Every subject of ``specs`` (TopicSpecs) registered with BACKWARD compatibility; their names."""
    done = []
    for spec in specs:
        for subject, name in topic_subjects(spec.name, spec.value_schemas):
            register_lineage(registry, subject, name)
            done.append(subject)
    return done


def registry_url(settings: Settings) -> str:
    """The configured registry's URL (``registry.url``), else the one ``caselink infra up`` started."""
    if settings.registry.url:
        return settings.registry.url
    from caselink.core.cluster import local_service_url

    url = local_service_url(settings.infra.run_dir, "registry")
    if not url:
        raise RegistryError("no schema registry: run `caselink infra up`, or point at one with "
                            "CASELINK_REGISTRY__URL (a Confluent-compatible API; credentials in "
                            "CASELINK_REGISTRY__USERNAME / CASELINK_REGISTRY__PASSWORD)")
    return url


def registry_from_settings(settings: Settings) -> SchemaRegistry:
    """The registry of ``settings``: configured, else the one ``caselink infra up`` started."""
    r = settings.registry
    return HttpRegistry(registry_url(settings), r.username, r.password.get_secret_value() if r.password else None,
                        r.ssl_ca_location)


class GenericAvroDecoder:
    """Any registry-framed Avro value, read with its writer schema: what caselink reads of other
    systems' topics (a Debezium change event, say), whose schemas are not caselink's own."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._schemas: dict[int, Any] = {}

    def decode(self, data: bytes) -> Any:
        """The value as Python data; ValueError for bytes that are not registry-framed Avro of a
        schema the registry has (RegistryError if the registry cannot be asked)."""
        import io

        import fastavro

        if len(data) < 5 or data[0] != CONFLUENT_MAGIC:
            raise ValueError(f"not registry-framed Avro (first bytes {data[:5].hex()})")
        schema_id = int.from_bytes(data[1:5], "big")
        parsed = self._schemas.get(schema_id)
        if parsed is None:
            try:
                text = self.registry.schema_text(schema_id)
            except SchemaNotFoundError as exc:
                raise ValueError(str(exc)) from None
            parsed = self._schemas[schema_id] = fastavro.parse_schema(json.loads(text), named_schemas={})
        buf = io.BytesIO(data)
        buf.seek(5)
        try:
            value = fastavro.schemaless_reader(buf, parsed, None)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types for corrupt input
            raise ValueError(f"corrupt Avro body (schema {schema_id}): {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(data):
            raise ValueError(f"{len(data) - buf.tell()} trailing bytes after the Avro body (schema {schema_id})")
        return value
