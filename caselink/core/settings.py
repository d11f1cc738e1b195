"""One typed settings object for every caselink process.

Values come, lowest precedence first, from the defaults below, a YAML file (``caselink.yaml`` in
the working directory or the path in ``CASELINK_CONFIG``) and ``CASELINK_*`` environment variables
(nested with ``__``, e.g. ``CASELINK_KAFKA__BOOTSTRAP_SERVERS``). Secrets such as SASL passwords
and pseudonymisation keys are accepted from the environment only, never from the YAML file, so a
config file can be committed or shared without leaking them.
"""

from __future__ import annotations

import os
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

SECRET_FIELDS = {("kafka", "sasl_password"), ("consent", "pseudonym_key"), ("ingest", "tokens"), ("web", "tokens"),
                 ("registry", "password")}


class KafkaSettings(BaseModel):
    """Where the broker is. Empty ``bootstrap_servers`` means: use the local broker from ``infra``."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    # None: the cluster's own defaults (default.replication.factor, min.insync.replicas), so a
    # topic made on `caselink infra up --brokers 3` gets RF 3 and min ISR 2, and on a production
    # cluster whatever its owners chose. Set them only to override the cluster.
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    default_partitions: int = Field(default=3, ge=1)
    # The largest message caselink produces (the producer's message.max.bytes): a LinkedCase of a
    # citizen too large for it lists the members that fit and counts the rest (members_omitted).
    max_message_bytes: int = Field(default=1_000_000, ge=10_000)


class RegistrySettings(BaseModel):
    """The schema registry every value is framed against (schemas/registry.py). Empty ``url``
    means: the local registry ``caselink infra up`` started. Any registry with the
    Confluent-compatible REST API serves (Apicurio's is under ``/apis/ccompat/v7``); the password
    comes from the environment only (CASELINK_REGISTRY__PASSWORD)."""

    model_config = ConfigDict(extra="forbid")

    url: str = ""
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_location: str | None = None


class InfraSettings(BaseModel):
    """The local Kafka, schema registry and Kafka Connect worker the project starts for itself
    (demo, tests, development)."""

    model_config = ConfigDict(extra="forbid")

    kafka_version: str = "4.4.0"
    cache_dir: Path = Path.home() / ".cache" / "caselink"
    run_dir: Path = Path.home() / ".local" / "state" / "caselink" / "kafka"
    heap: str = "512m"
    ready_timeout_s: float = 90.0
    java_home: Path | None = None
    # Apicurio Registry needs Java 21+: a JDK found by infra/jvm.py unless set here.
    registry_version: str = "3.3.3"
    registry_java_home: Path | None = None
    registry_heap: str = "256m"
    # Kafka Connect's runtime: the version Debezium 3.6.1 is built against (on connect-runtime 4.4.0
    # its PostgreSQL source fails: org.apache.kafka.common.utils.Sanitizer is gone); the worker
    # talks to the 4.4.0 broker like any client.
    connect_version: str = "4.3.0"
    connect_heap: str = "512m"


class WorkerSettings(BaseModel):
    """The worker that normalises and links (a Faust app with the linker and the normaliser processes)."""

    model_config = ConfigDict(extra="forbid")

    app_id: str = "caselink"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: Path = Path.home() / ".local" / "state" / "caselink" / "worker"
    batch_size: int = 500
    # How long the Faust normaliser agent (normaliser_processes: 0) waits to fill a batch: under
    # load batches fill by count first, and a short wait keeps latency low at low rates (figures:
    # docs/benchmarks.md). The normaliser processes' loop does not wait: it takes whatever has
    # been fetched once one message is there.
    batch_within_s: float = 0.004
    # Seconds between snapshots of the linker's index in data_dir (0: none): a restart loads the
    # last one and replays the link input only from there (streams/snapshot.py). Each costs a
    # forked child's CPU time, growing with the index (docs/benchmarks.md).
    snapshot_interval_s: float = Field(default=600.0, ge=0)
    # Normaliser processes (confluent-kafka loops, streams.normaliser_processes); 0: the Faust agent inside the worker.
    normaliser_processes: int = Field(default=1, ge=0)


class LinkageSettings(BaseModel):
    """How records are linked: the deployment's model, its thresholds, identifier schemes and guards.

    One model file serves ``caselink link``, the worker and ``caselink rebuild``: the one
    ``caselink train`` writes to ``model_path`` from the deployment's own extracts or topics. The
    bundled model was trained on UK-shaped synthetic data and is for the demo and the samples only
    (``bundled_model: true``).
    """

    model_config = ConfigDict(extra="forbid")

    model_path: Path = Path.home() / ".local" / "state" / "caselink" / "model.json"
    bundled_model: bool = False
    # The model's own thresholds unless set here (match probabilities).
    link_threshold: float | None = Field(default=None, gt=0, lt=1)
    review_threshold: float | None = Field(default=None, gt=0, lt=1)
    # A citizen this large takes no more records without a reviewer (None: no limit).
    max_citizen_records: int | None = Field(default=100, ge=2)
    max_block_size: int = Field(default=200, ge=2)
    # Added to, or changing, the built-in identifier schemes (docs/identifier-schemes.md); a
    # scheme set to null is removed. Used when training; the model carries what it was trained with.
    identifier_schemes: dict[str, dict[str, Any] | None] = {}
    # Names that mean "no name" in this deployment's data, added to the built-in list.
    placeholder_names: list[str] = []
    # What to do when the model does not fit the data (linkage/checks.py): warn, refuse, or off.
    model_check: Literal["warn", "refuse", "off"] = "warn"


class ShardSettings(BaseModel):
    """The sharded index's processes (``caselink shard blocks|records``, docs/architecture.md).

    ``enabled``: the worker's linker becomes the ordered resolver of the sharded index: it links
    with the record shards' answers and keeps the records' values in a store on disk (off: the
    single writer, the default). It needs ``caselink shard blocks`` and ``caselink shard records``
    running against the same link input; docs/operations.md says when to switch and how.
    ``partitions`` is how many parts the blocking keys and records are dealt in; every shard of a
    deployment must use the same number, and it bounds how many shards a tier can use.

    ``instance_id`` names one shard process for good (Kafka's static membership, KIP-345,
    ``group.instance.id``): set it to a name that survives the process's restarts and that no
    other shard of the tier uses, such as a pod's stable name. A shard that restarts within
    ``session_timeout_s`` is then dealt its own partitions again without a rebalance, so no other
    shard replays the link input for them meanwhile. The price: a shard stopped for good keeps
    its partitions, unanswered, until the session timeout ends. Without it (the default) a
    shard's partitions go to the others as soon as it leaves or dies."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    partitions: int = Field(default=60, ge=1, le=10_000)
    web_port: int = 6069  # `caselink shard` serves /health and /metrics here
    instance_id: str | None = Field(default=None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    session_timeout_s: float = Field(default=10.0, ge=6.0, le=1800.0)  # the broker's group.min/max.session.timeout.ms
    # A directory of this shard's own (0700) for its snapshots (streams/shard_snapshot.py), written
    # every snapshot_interval_s once answered and committed; a shard dealt partitions it holds
    # there replays the link input only from the snapshot. None: no snapshots, replay from the start.
    data_dir: Path | None = None
    snapshot_interval_s: float = Field(default=60.0, gt=0)


class ConnectorSettings(BaseModel):
    """How often source connectors record their position.

    A checkpoint waits until everything produced before it is acknowledged, so it stalls the
    connector for a round trip to the broker. Like Kafka Connect's ``offset.flush.interval.ms``
    it is taken on a timer (here no more often than every ``checkpoint_interval_s``, and then at
    the next multiple of ``checkpoint_every_rows``). A crash re-sends at most the rows since the
    last checkpoint; they carry the same event ids and versions, and the linker absorbs them.
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint_every_rows: int = Field(default=5_000, ge=1)
    checkpoint_interval_s: float = Field(default=1.0, ge=0)


class IngestSettings(BaseModel):
    """The HTTP ingest endpoint. Tokens (agency -> bearer token) come from the environment only:
    CASELINK_INGEST__TOKENS='{"health": "...", "police": "..."}'."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 5_000_000
    max_events_per_request: int = 10_000
    tokens: dict[str, SecretStr] = {}


class ConsentSettings(BaseModel):
    """The consent gate. The pseudonymisation key comes from the environment only
    (CASELINK_CONSENT__PSEUDONYM_KEY); without it, pseudonymised purposes release nothing."""

    model_config = ConfigDict(extra="forbid")

    policy_path: Path | None = None  # None: the bundled example policy
    pseudonym_key: SecretStr | None = None
    pseudonym_key_id: str = "k1"
    in_worker: bool = False  # run the gate inside `caselink worker` instead of `caselink gate` (small setups)
    # Several `caselink gate` processes share the citizens, each serving the caselink.linked-cases
    # partitions the group <app id>-gate-partitions deals it (instead of one active gate and standbys).
    partitioned: bool = False
    # With partitioned: a name for this gate process that survives its restarts, unique among the
    # gates (Kafka static membership, as ``shards.instance_id``): restarted within
    # ``session_timeout_s`` it is dealt its own partitions again and no other gate takes them on.
    instance_id: str | None = Field(default=None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    session_timeout_s: float = Field(default=10.0, ge=6.0, le=1800.0)  # the broker's group.min/max.session.timeout.ms
    web_port: int = 6067  # `caselink gate` serves /health and /metrics here
    policy_poll_s: float = 1.0
    # Tests only: before committing its first transaction that releases or retracts a view, the gate
    # sends what it produced to the broker, writes its pid to this file and stops itself (SIGSTOP),
    # so a test can look at the open transaction and kill the gate inside it.
    test_pause_before_commit: Path | None = None

    @model_validator(mode="after")
    def _one_way_to_run(self) -> ConsentSettings:
        if self.partitioned and self.in_worker:
            raise ValueError("consent.partitioned shares the citizens between `caselink gate` processes; "
                             "it cannot be combined with consent.in_worker (one gate inside the worker)")
        if self.instance_id and not self.partitioned:
            raise ValueError("consent.instance_id names a gate among partitioned gates; without consent.partitioned "
                             "one gate is active and the others are standbys, and it would mean nothing")
        return self


class WebToken(BaseModel):
    """One person's (or one system's) credential for the worker's web API."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["reader", "reviewer", "operator"]
    token: SecretStr


class WebSettings(BaseModel):
    """Who may use the worker's web API (streams/web_auth.py), and TLS for caselink's HTTP listeners.

    Tokens come from the environment only, by name, each with a role:
    CASELINK_WEB__TOKENS='{"alice": {"role": "reviewer", "token": "..."}}'. The name is who a
    reviewer's decisions are recorded under. None configured: the API refuses every request for
    personal data (``/health`` and ``/metrics`` stay open). With ``tls_certfile`` and
    ``tls_keyfile`` the worker's web API, the gate's and the ingest service serve HTTPS only."""

    model_config = ConfigDict(extra="forbid")

    tokens: dict[str, WebToken] = {}
    session_ttl_s: float = Field(default=8 * 3600, gt=0)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    def ssl_context(self) -> Any:
        """A server TLS context, or None without a certificate."""
        if self.tls_certfile is None:
            return None

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_certfile, self.tls_keyfile)
        return context

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"


class LogSettings(BaseModel):
    """How every caselink process logs (caselink/core/logs.py): one format for all of them."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Everything configurable about caselink, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="CASELINK_", env_nested_delimiter="__", extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    registry: RegistrySettings = RegistrySettings()
    infra: InfraSettings = InfraSettings()
    consent: ConsentSettings = ConsentSettings()
    worker: WorkerSettings = WorkerSettings()
    ingest: IngestSettings = IngestSettings()
    connector: ConnectorSettings = ConnectorSettings()
    linkage: LinkageSettings = LinkageSettings()
    shards: ShardSettings = ShardSettings()
    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()
    agencies: list[str] = ["health", "social_care", "police", "education", "housing"]
    purposes: list[str] = ["direct_care", "safeguarding", "research", "planning"]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlSource(settings_cls))

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka-style config shared by every confluent-kafka client we create."""
        k = self.kafka
        conf: dict[str, Any] = {"bootstrap.servers": k.bootstrap_servers}
        if k.security_protocol != "PLAINTEXT":
            conf["security.protocol"] = k.security_protocol
        if k.sasl_mechanism:
            conf["sasl.mechanism"] = k.sasl_mechanism
            conf["sasl.username"] = k.sasl_username or ""
            conf["sasl.password"] = k.sasl_password.get_secret_value() if k.sasl_password else ""
        for key, value in (
            ("ssl.ca.location", k.ssl_ca_location),
            ("ssl.certificate.location", k.ssl_certificate_location),
            ("ssl.key.location", k.ssl_key_location),
        ):
            if value:
                conf[key] = value
        return conf


class SettingsError(ValueError):
    """The configuration is wrong. The message is one line per problem, each naming the file and
    line (or the environment variable) and what to do, for the CLI to print as it is."""


def config_path() -> Path:
    return Path(os.environ.get("CASELINK_CONFIG", "caselink.yaml"))


def _read_yaml(path: Path) -> Any:
    from caselink.core.yaml_lines import load_yaml_with_lines

    return load_yaml_with_lines(path.read_text(), path, SettingsError) or {}


class YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML config file, refusing secrets in it."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        from caselink.core.yaml_lines import line_of

        path = config_path()
        if not path.exists():
            return {}
        data = _read_yaml(path)
        if not isinstance(data, dict):
            raise SettingsError(f"{path}:1: the top level must be a mapping of settings")
        for section, key in SECRET_FIELDS:
            if isinstance(data.get(section), dict) and key in data[section]:
                raise SettingsError(
                    f"{path}:{line_of(data[section], key)}: {section}.{key} is a secret and is refused in a file; "
                    f"set CASELINK_{section.upper()}__{key.upper()} in the environment instead"
                )
        return data


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The settings that may stand where ``loc``'s last part stands."""
    model: Any = Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(getattr(model, "model_fields", {}))


def describe(exc: ValidationError) -> str:
    """A pydantic error as lines a person can act on: where (file:line or variable) and what."""
    from caselink.core.yaml_lines import line_of_path

    path = config_path()
    try:
        data = _read_yaml(path) if path.exists() else {}
    except SettingsError:
        data = {}
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        dotted = ".".join(str(p) for p in loc)
        node: Any = data
        in_file = True
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                in_file = False
                break
        where = (f"{path}:{line_of_path(data, loc)}" if in_file
                 else "CASELINK_" + "__".join(str(p).upper() for p in loc) + " (environment)")
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            section = ".".join(str(p) for p in loc[:-1]) or "the top level"
            lines.append(f"{where}: {dotted} is not a setting"
                         + (f"; {section} takes: {', '.join(allowed)}" if allowed else ""))
        else:
            lines.append(f"{where}: {dotted}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


def load_settings() -> Settings:
    """Settings from the defaults, ``caselink.yaml`` and the environment, or ``SettingsError``."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
