"""One validated settings class per component, read from ``DISTILLERY_*`` environment variables:
here the paths, Kafka and serving, and ``Settings``, which holds every component; the learning
loop's classes live in ``distillery.loop_settings`` and ``distillery.release_settings`` and are
re-exported here.

Defaults run the whole loop on one machine with nothing set. Every field is validated, and a bad
value raises a ``pydantic.ValidationError`` that names the field and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from distillery.loop_settings import (
    MonitorSettings,
    SchedulerSettings,
    StoreSettings,
    StudentSettings,
    TrainSettings,
    TrustSettings,
    env_prefix,
)
from distillery.release_settings import GateSettings, RolloutSettings
from distillery.teacher_settings import CascadeSettings, TeacherSettings

__all__ = [
    "CascadeSettings", "EnvVar", "GateSettings", "KafkaSettings", "MonitorSettings", "PathSettings",
    "RolloutSettings", "SchedulerSettings", "ServeSettings", "Settings", "StoreSettings",
    "StudentSettings", "TeacherSettings", "TrainSettings", "TrustSettings", "env_vars",
    "is_loopback",
]  # fmt: skip


def is_loopback(host: str) -> bool:
    """Whether an API bound to ``host`` is reachable from this machine only."""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


class PathSettings(BaseSettings):
    """Where state lives: registry, example store, spool, Ray Train results."""

    model_config = env_prefix("")

    state_dir: Path = Path("state")
    data_dir: Path = Path("data")
    task_file: Path = Path("tasks/sentiment.yaml")
    model_store: str | None = Field(
        default=None,
        description=(
            "where model versions live, read by every node: a local path or an fsspec URL "
            "(file:///shared/registry, s3://bucket/prefix, gs://bucket/prefix); "
            "unset: <state_dir>/registry"
        ),
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description=(
            "local copies of versions downloaded from a remote model store; "
            "unset: <state_dir>/model-cache"
        ),
    )

    @field_validator("state_dir", "data_dir", "task_file", "model_cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("model_store")
    @classmethod
    def _known_filesystem(cls, value: str | None) -> str | None:
        """A local path made absolute, or a URL whose scheme fsspec knows."""
        import fsspec

        if value is None or not value.strip():
            return None
        protocol, _ = fsspec.core.split_protocol(value)
        if protocol is None:
            return str(Path(value).expanduser().resolve())
        if protocol not in fsspec.available_protocols():
            raise ValueError(
                f"model_store={value!r}: fsspec knows no filesystem {protocol!r} "
                "(use a local path or a URL like file:///shared/registry or s3://bucket/prefix)"
            )
        return value

    @property
    def registry_dir(self) -> Path:
        """The default model store: ``<state_dir>/registry``."""
        return self.state_dir / "registry"

    def model_store_url(self) -> str:
        """The model store every component opens: ``model_store``, else ``registry_dir``."""
        return self.model_store or str(self.registry_dir)

    def model_cache_path(self) -> Path:
        """Where a node keeps its local copies of remote versions."""
        return self.model_cache_dir or self.state_dir / "model-cache"

    @property
    def store_dir(self) -> Path:
        return self.state_dir / "store"

    @property
    def train_dir(self) -> Path:
        return self.state_dir / "train"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def replay_dir(self) -> Path:
        return self.state_dir / "replay"


_SASL_FIELDS = ("sasl_mechanism", "sasl_username", "sasl_password")
_TLS_FIELDS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


class KafkaSettings(BaseSettings):
    """The broker. With no bootstrap servers, ``distillery up`` starts the embedded broker."""

    model_config = SettingsConfigDict(
        env_prefix="DISTILLERY_KAFKA_",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,  # the input holds the SASL password; messages name values
    )

    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "DISTILLERY_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    partitions: int = Field(default=3, ge=1, le=64)
    batch_bytes: int = Field(
        default=1,
        ge=0,
        description=(
            "producer batch size; 1 puts each record in its own batch, which the embedded tansu "
            "0.6.0 needs (it keeps only the first record of a multi-record batch); a production "
            "Kafka can take 16384 or more"
        ),
    )
    request_timeout_ms: int = Field(default=10_000, ge=1_000)
    membership: Literal["group", "assign"] = Field(
        default="group",
        description=(
            "how the labeler and the example store take their partitions: group joins a "
            "consumer group (several labelers share the partitions); assign takes every "
            "partition itself and commits under the group without joining it (one of each). "
            "The embedded tansu gets assign: its group coordinator wedged after restarts"
        ),
    )
    send_timeout_s: float = Field(default=5.0, gt=0)
    resend_window_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "feedback the broker acknowledged in the last this many seconds is sent again if its "
            "topic is recreated (a memory-only broker, the embedded tansu, restarted and lost "
            "what the store had not consumed yet); 0 turns it off"
        ),
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="SSL / SASL_SSL: TLS to the brokers; SASL_*: log in"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="needed with SASL_PLAINTEXT and SASL_SSL"
    )
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="never logged nor serialised (a Serve config, a registry entry): each "
        "process reads it from its own environment",
    )
    ssl_cafile: Path | None = Field(default=None, description="PEM CA bundle (else system CAs)")
    ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mTLS)")
    ssl_keyfile: Path | None = Field(default=None, description="PEM client key (mTLS)")

    @model_validator(mode="after")
    def _security_fits_the_protocol(self) -> KafkaSettings:
        protocol = self.security_protocol
        sasl = [name for name in _SASL_FIELDS if getattr(self, name) is not None]
        tls = [name for name in _TLS_FIELDS if getattr(self, name) is not None]
        if protocol.startswith("SASL_") and len(sasl) < len(_SASL_FIELDS):
            missing = [name for name in _SASL_FIELDS if name not in sasl]
            env = ", ".join(f"DISTILLERY_KAFKA_{name.upper()}" for name in missing)
            raise ValueError(f"security_protocol={protocol} needs {', '.join(missing)} ({env})")
        if sasl and not protocol.startswith("SASL_"):
            raise ValueError(
                f"{', '.join(sasl)} set but security_protocol={protocol} does not use SASL "
                "(SASL_PLAINTEXT or SASL_SSL does)"
            )
        if tls and not protocol.endswith("SSL"):
            raise ValueError(
                f"{', '.join(tls)} set but security_protocol={protocol} does not use TLS "
                "(SSL or SASL_SSL does)"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError(f"ssl_keyfile={self.ssl_keyfile} needs ssl_certfile")
        return self

    def client_options(self) -> dict[str, Any]:
        """kafka-python keyword arguments for the connection's security, only those set, for
        every producer, consumer and admin client. Raises ``FileNotFoundError`` naming a TLS
        file that is not there."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism is not None and self.sasl_password is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        for name in _TLS_FIELDS:
            path: Path | None = getattr(self, name)
            if path is None:
                continue
            if not path.is_file():
                raise FileNotFoundError(f"{name}={path} is not a file")
            options[name] = str(path)
        return options

    def servers(self) -> str:
        if not self.bootstrap_servers:
            raise ValueError(
                "KAFKA_BOOTSTRAP_SERVERS is not set and no embedded broker was started"
            )
        return self.bootstrap_servers


class ServeSettings(BaseSettings):
    """The student endpoint: HTTP, batching, bounds, sampling and the feedback secret."""

    model_config = env_prefix("SERVE_")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    num_replicas: int = Field(default=2, ge=1, description="replicas (autoscaling: the minimum)")
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        description="with it, Serve autoscales between num_replicas and max_replicas on "
        "target_ongoing_requests; unset: a fixed num_replicas",
    )
    target_ongoing_requests: float = Field(
        default=8.0, gt=0, description="autoscaling target: requests in flight per replica"
    )
    replica_cpus: float = Field(default=0.25, gt=0)
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.0, ge=0, le=1)
    max_ongoing_requests: int = Field(default=128, ge=1)
    max_text_chars: int = Field(default=2_000, ge=1)
    max_items: int = Field(default=64, ge=1)
    max_tokens: int = Field(default=128, ge=8, le=512)
    max_body_bytes: int = Field(default=1_048_576, ge=1_024)
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_new_tokens: int = Field(
        default=256, ge=1, le=2_048, description="generate: the bound on a chat's max_tokens"
    )
    max_messages: int = Field(default=32, ge=1, description="generate: messages in one chat")
    generate_runtime: Literal["llama.cpp", "torch"] = Field(
        default="llama.cpp",
        description="generate: what decodes a served reply: llama.cpp on the version's "
        "student.gguf (several times faster here: bench.generate), or transformers",
    )
    generate_threads: int = Field(default=1, ge=1, le=64, description="generate: per replica")
    generate_streams: int = Field(
        default=8, ge=1, le=64,
        description="generate: replies a replica decodes together on llama.cpp (continuous "
        "batching); 1: one at a time",
    )  # fmt: skip
    access_log: bool = False
    sample_rate: float = Field(default=0.2, ge=0, le=1, description="uniform base rate")
    sample_margin_below: float = Field(
        default=0.2, ge=0, le=1, description="top-1 minus top-2 probability that counts as unsure"
    )
    sample_novelty_above: float = Field(
        default=1.0, gt=0, description="novelty (1.0 = training window's 95th pct) to prioritise"
    )
    sample_queue_size: int = Field(default=10_000, ge=1)
    unsampled_cache_size: int = Field(default=50_000, ge=0)
    feedback_secret: str | None = Field(default=None, min_length=16)
    auth: Literal["auto", "keys", "open"] = Field(
        default="auto",
        description="keys: every call needs an API key; open: none (loopback only); auto: open "
        "on loopback until the first key exists",
    )
    operator_token: str | None = Field(
        default=None, min_length=16, description="admin API bearer token (else state/operator)"
    )
    metrics_export_port: int = Field(default=8080, ge=1, le=65535)
    quantize: bool = False
    haproxy_ingress: bool = True
    drain_period_s: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _replica_bounds(self) -> ServeSettings:
        if self.max_replicas is not None and self.max_replicas < self.num_replicas:
            raise ValueError(
                f"max_replicas={self.max_replicas} is below num_replicas={self.num_replicas}"
            )
        if self.auth == "open" and not is_loopback(self.host):
            raise ValueError(
                f"auth='open' with host={self.host!r}: only a loopback API may run without API "
                "keys (set DISTILLERY_SERVE_AUTH=keys and create one with `distillery keys "
                "create NAME`)"
            )
        return self


class Settings(BaseModel):
    """Every component's settings, each read from its own environment prefix."""

    paths: PathSettings = Field(default_factory=PathSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    cascade: CascadeSettings = Field(default_factory=CascadeSettings)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    student: StudentSettings = Field(default_factory=StudentSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)

    @model_validator(mode="after")
    def _tokens_fit_the_student(self) -> Settings:
        if self.serve.max_tokens > self.student.max_positions:
            raise ValueError(
                f"serve.max_tokens={self.serve.max_tokens} exceeds "
                f"student.max_positions={self.student.max_positions}"
            )
        return self


@dataclass(frozen=True)
class EnvVar:
    """One environment variable the code reads: its default as text, and what it sets."""

    default: str
    what: str


EXTERNAL_ENV = {
    "RAY_ADDRESS": EnvVar("unset", "a Ray cluster to join (read by Ray); unset: a local Ray"),
    "RAY_DASHBOARD_ADDRESS": EnvVar(
        "the cluster's", "the Ray dashboard URL `distillery up` hands the scheduler for deploys"
    ),
    "DISTILLERY_FAILPOINT": EnvVar("unset", "tests only: crash at this named failpoint"),
}


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def env_vars() -> dict[str, EnvVar]:
    """Every environment variable the code reads: per settings class, its prefix + each field
    name upper-cased (or the field's aliases), plus ``EXTERNAL_ENV``; sorted by name."""
    found = dict(EXTERNAL_ENV)
    for component, info in Settings.model_fields.items():
        cls = info.annotation
        if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
            raise TypeError(f"Settings.{component} is {cls}, not a BaseSettings class")
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            names = [prefix + name] if alias is None else _alias_names(alias)
            for var in names:
                found[var.upper()] = EnvVar(_default_text(field.default), field.description or "")
    return dict(sorted(found.items()))


def _alias_names(alias: Any) -> list[str]:
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [str(alias)]
