"""The learning loop's settings: student, training, scheduler, monitor, example store and trust,
one validated class per component (``distillery.teacher_settings`` holds the teacher's and the
cascade's, ``distillery.release_settings`` the gate's and the rollout's; ``distillery.settings``
the serving side, the paths and ``Settings``, and re-exports these).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def env_prefix(component: str) -> SettingsConfigDict:
    """``DISTILLERY_<component>…`` variables; unknown ones are ignored."""
    return SettingsConfigDict(env_prefix=f"DISTILLERY_{component}", extra="ignore")


class StudentSettings(BaseSettings):
    """Shape of a freshly initialised student (BertForSequenceClassification)."""

    model_config = env_prefix("STUDENT_")

    layers: int = Field(default=2, ge=1)
    hidden: int = Field(default=128, ge=8)
    heads: int = Field(default=2, ge=1)
    intermediate: int = Field(default=512, ge=8)
    max_positions: int = Field(default=512, ge=16)
    init: Literal["pca", "teacher_layers"] = Field(
        default="pca",
        description="pca: a narrow student with the teacher's embeddings projected (hidden); "
        "teacher_layers: the teacher's embeddings and first `layers` layers, at its width",
    )

    @field_validator("heads")
    @classmethod
    def _heads_divide_hidden(cls, heads: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden", 128)
        if hidden % heads:
            raise ValueError(f"heads={heads} must divide hidden={hidden}")
        return heads


class TrainSettings(BaseSettings):
    """A distillation round: loss weights, optimisation, data window, Ray Train resources."""

    model_config = env_prefix("TRAIN_")

    kd_temperature: float = Field(default=1.0, gt=0)
    kd_weight: float = Field(default=1.0, ge=0)
    correction_weight: float = Field(default=1.0, ge=0)
    hidden_weight: float = Field(
        default=0.0,
        ge=0,
        description="hidden-state loss (TinyBERT) to the teacher's sentence state; > 0 also "
        "makes the labeler send that state with each label",
    )
    epochs: int = Field(default=2, ge=1, description="a round that starts from the parent")
    learning_rate: float = Field(default=3e-4, gt=0)
    scratch_epochs: int = Field(default=4, ge=1, description="the first student, from scratch")
    scratch_learning_rate: float = Field(default=1e-3, gt=0)
    generate_learning_rate: float = Field(
        default=5e-5, gt=0, description="generate: AdamW rate of a round's SFT (bench.generate)"
    )
    dpo_weight: float = Field(
        default=0.0,
        ge=0,
        description="generate: weight of a round's DPO term on preference pairs (a reply rated "
        "dpo_max_rating or lower against the correction or the teacher's reply); 0 turns it "
        "off (bench.generate_dpo)",
    )
    dpo_beta: float = Field(default=0.1, gt=0, description="generate: DPO's β (TRL's default)")
    dpo_max_rating: int = Field(
        default=2, ge=1, le=4, description="generate: a reply rated this or lower is rejected"
    )
    batch_size: int = Field(default=32, ge=1)
    window_size: int = Field(default=2_000, ge=1)
    replay_ratio: float = Field(default=1.0, ge=0)
    replay_capacity: int = Field(
        default=5_000, ge=1, description="older labelled rows kept for replay (a reservoir)"
    )
    bad_rating_max: int = Field(default=2, ge=1, le=5, description="ratings this low are 'bad'")
    bad_agreement_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="KD weight of a teacher label that agrees with a bad-rated answer (0: drop)",
    )
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    num_workers: int = Field(default=1, ge=1)
    worker_cpus: float = Field(default=0.5, gt=0)
    round_timeout_s: float = Field(default=900, gt=0)
    max_failures: int = Field(
        default=2, ge=0, description="worker-group restarts a round survives (from its checkpoint)"
    )
    seed: int = 0


class SchedulerSettings(BaseSettings):
    """When a round starts (``monitoring.triggers.decide``): on schedule, label volume, drift,
    disagreement or negative feedback, whichever comes first; never within ``cooldown_minutes``
    of the last round, and a signal that fired must fall below ``rearm_ratio`` × its threshold
    before it may fire again (hysteresis)."""

    model_config = env_prefix("SCHEDULER_")

    interval_minutes: float = Field(default=30, gt=0, description="schedule trigger")
    min_new_labels: int = Field(default=300, ge=1, description="volume trigger")
    min_labels_for_time_trigger: int = Field(
        default=20, ge=1, description="new labels any trigger needs (a round needs data)"
    )
    drift_threshold: float = Field(
        default=0.4, gt=0, le=1, description="drift trigger: share of drifted columns, any kind"
    )
    disagreement_threshold: float = Field(
        default=0.35, gt=0, le=1, description="disagreement trigger: teacher vs served answers"
    )
    negative_feedback_threshold: float = Field(
        default=0.3, gt=0, le=1, description="feedback trigger: share of recent ratings bad"
    )
    reply_disagreement_threshold: float = Field(
        default=0.55,
        gt=0,
        le=1,
        description="a generate task's disagreement trigger: 1 − chrF/100 of served replies "
        "against the teacher's (bench.generate: 0.72-0.76 never retrained, 0.41-0.43 after a "
        "round of 160 answers)",
    )
    min_signal_labels: int = Field(
        default=50, ge=1, description="teacher labels the disagreement signal needs"
    )
    min_signal_ratings: int = Field(
        default=20, ge=1, description="ratings the feedback signal needs"
    )
    cooldown_minutes: float = Field(default=5, ge=0, description="no round sooner after one")
    rearm_ratio: float = Field(
        default=0.8, gt=0, le=1, description="hysteresis: re-armed below ratio × threshold"
    )
    poll_s: float = Field(default=5, gt=0)
    drift_every_s: float = Field(default=60, gt=0)
    seed_size: int = Field(default=1_600, ge=10)
    enabled: bool = True


class MonitorSettings(BaseSettings):
    """Drift and label-free quality: windows, methods, series and report retention, and the
    Evidently UI ``distillery up`` starts on the checks' workspace."""

    model_config = env_prefix("MONITOR_")

    reference_rows: int = Field(
        default=2_000, ge=30, description="newest rows of the serving version's training window"
    )
    current_rows: int = Field(default=1_000, ge=30, description="newest rows since that window")
    min_rows: int = Field(default=100, ge=10, description="drift needs this many in each window")
    signal_window_s: float = Field(
        default=900, gt=0, description="disagreement and feedback: the last this many seconds"
    )
    pca_components: int = Field(
        default=5, ge=1, le=64, description="student-embedding principal components checked"
    )
    method: Literal["auto", "ks", "wasserstein"] = Field(
        default="auto",
        description="per-column drift test: ks (K-S / chi-squared p-value below threshold), "
        "wasserstein (normed Wasserstein / Jensen-Shannon distance at or above threshold), or "
        "auto: ks with p 0.01 when the smaller window has under 1,000 rows, else wasserstein "
        "at 0.15 (the calibration in bench/results/drift_methods.md)",
    )
    threshold: float = Field(
        default=0.01, gt=0, description="p-value (ks) or distance (wasserstein); not used by auto"
    )
    reports_keep: int = Field(default=20, ge=1, description="HTML drift reports kept")
    html_every: int = Field(
        default=5, ge=1, description="save an HTML report every this many drift checks"
    )
    series_points: int = Field(
        default=720, ge=10, description="points of the dashboard series (and of the Evidently UI's)"
    )
    ui: bool = Field(
        default=True, description="`distillery up` starts Evidently's UI on state/evidently"
    )
    ui_port: int | None = Field(
        default=None, ge=1, le=65535, description="the Evidently UI's loopback port; unset: free"
    )
    ui_start_timeout_s: float = Field(
        default=120, gt=0, description="how long `up` waits for the Evidently UI to answer"
    )


class StoreSettings(BaseSettings):
    """The example store: how often it flushes a Parquet shard; how late feedback may join."""

    model_config = env_prefix("STORE_")

    flush_rows: int = Field(default=256, ge=1)
    flush_s: float = Field(default=2.0, gt=0)
    compact_shards: int = Field(default=32, ge=2, description="merge this many small shards…")
    compact_after_s: float = Field(default=60.0, ge=0, description="…once this old")
    join_window_s: float = Field(
        default=3_600, gt=0, description="feedback later than this after its prediction is late"
    )


class TrustSettings(BaseSettings):
    """Whom the loop learns from: confirmations count as human labels, and every API key and the
    teacher get a measured reliability (``feedback.trust``) that weighs their labels."""

    model_config = env_prefix("TRUST_")

    mode: Literal["measured", "off"] = Field(
        default="measured",
        description="off: every key and the teacher weigh 1, every key feeds the golden set",
    )
    confirmations: bool = Field(
        default=True, description="a good rating with no correction confirms the served label"
    )
    confirm_min_rating: int = Field(default=4, ge=1, le=5)
    open_trusted: bool = Field(
        default=True, description="open mode (no API keys, loopback): its feedback is trusted"
    )
    trusted_keys: str | None = Field(
        default=None, description="comma-separated key ids trusted beside those `keys trust` marks"
    )
    key_prior_reliability: float = Field(
        default=0.6, gt=0, lt=1, description="a new key's reliability before evidence"
    )
    key_prior_strength: float = Field(
        default=5.0, gt=0, description="…worth this many comparisons (a Beta prior)"
    )
    teacher_prior_reliability: float = Field(
        default=0.8, gt=0, lt=1, description="the teacher's reliability before human labels"
    )
    teacher_prior_strength: float = Field(
        default=10.0, gt=0, description="…worth this many human labels"
    )
    teacher_chance_z: float = Field(
        default=1.64,
        ge=0,
        description="the teacher's labels stop counting in training (KD weight 0) where the "
        "upper bound of its reliability, this many standard errors above, is no better than a "
        "guess; elsewhere they count in full",
    )
    floor: float = Field(
        default=0.8, gt=0, le=1, description="reliability that lets a key feed the golden set"
    )
    confident: float = Field(
        default=0.8, gt=0, le=1, description="teacher labels this sure are a reference for keys"
    )
    ensemble_min_labels: int = Field(
        default=50,
        ge=1,
        description="an ensemble teacher: human labels each member needs before the round mixes "
        "the members by their measured reliability instead of the task file's weights",
    )

    def trusted_ids(self) -> set[str]:
        return {k.strip() for k in (self.trusted_keys or "").split(",") if k.strip()}
