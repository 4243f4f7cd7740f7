"""The typed contracts of the promote path, each defined once for its producer and its consumer.

- ``StudentConfig``: the Serve deployment's ``user_config``, written by ``services.deploy`` (from
  the registry's state, ``monitoring.promotion``) and read by every replica's ``reconfigure``;
  ``CandidateSpec`` is its rollout candidate.
- ``TriggerRecord``: what started a round, built by the scheduler, the operator API and the
  bootstrap, and kept in the version's ``meta.json`` (``training.registry.VersionMeta``).
- ``RoundProgress``: a round's rank-0 worker → the scheduler (``status``, Prometheus, the CLI bar).
- ``VariantReport``: a replica's rollout counts → the scheduler (``services.variants.merge``).
- ``Rollout`` (kept in the registry's ``rollout.json``), each version's live ``Evidence`` and the
  ``OnlineCheck`` s on it: the promotion's state, read by the rollout's verdict and by ``status``.
- ``RolloutVerdict``: the online checks' verdict on a stage, from ``monitoring.promotion`` to the
  registry (kept in ``VersionMeta.online``) and ``status``.
- ``GateReport`` and its ``GateCheck`` s (or a generate task's ``ReplyMeasures``): the gate's
  decision, from ``training.gate`` / ``training.generate_cycle`` to the registry
  (``VersionMeta.gate``), the ``RoundReport`` and ``status``.
- ``RoundReport``: how a round ended, from ``training.cycle`` to the scheduler and ``status``.
- ``OperatorAnswer``: what an operator's action did, from ``monitoring.promotion`` through
  ``POST /v1/admin/{action}`` to ``distillery promote|rollback|pause|resume``.

They cross Ray (pickled) or JSON (Serve's config, ``meta.json``), so every field is plain data;
``extra="forbid"`` makes a misspelt field an error at the border rather than a silent default.
The records a version's ``meta.json`` keeps (``GateReport``, ``RolloutVerdict``) ignore unknown
fields instead: a registry written by an older release must still load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from distillery.settings import RolloutSettings

Stage = Literal["shadow", "canary"]
TriggerKind = Literal[
    "feedback", "disagreement", "drift", "volume", "schedule", "operator", "bootstrap"
]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandidateSpec(_Contract):
    """A rollout's candidate as the replicas take it: they load ``version`` from the model
    ``store`` (``path``: where it is) and route ``share`` of texts to it in ``stage``."""

    version: int = Field(ge=1)
    path: str
    store: str | None = None
    stage: Stage
    share: float = Field(ge=0.0, le=1.0)
    id: str  # the rollout's id: sticky canary routing and the replicas' count keys


class StudentConfig(_Contract):
    """The Serve ``user_config``: the stable version (with ``store``, a replica on any node loads
    it from the model store; without it, from ``path`` on its own disk) and any candidate."""

    version: int = Field(ge=1)
    path: str
    store: str | None = None
    candidate: CandidateSpec | None = None

    def as_user_config(self) -> dict[str, object]:
        """JSON for Serve's config; ``store`` left out when unset (as Serve showed it before)."""
        return self.model_dump(mode="json", exclude={"store"} if self.store is None else set())


class TriggerRecord(_Contract):
    """What started a round: the trigger's ``kind``, its measured ``value`` (labels, minutes or
    a share; None for an operator or the bootstrap) and a readable ``reason``."""

    kind: TriggerKind
    value: float | None = None
    reason: str

    @classmethod
    def operator(cls, reason: str) -> TriggerRecord:
        return cls(kind="operator", reason=reason)

    @classmethod
    def bootstrap(cls, reason: str) -> TriggerRecord:
        return cls(kind="bootstrap", reason=reason)


class RoundProgress(_Contract):
    """A running round as its rank-0 worker sees it, every few batches."""

    round: str
    epoch: int = Field(ge=1)
    epochs: int = Field(ge=1)
    done: float = Field(ge=0.0, le=1.0)  # share of the round's batches done
    loss: float
    examples_per_s: float = Field(ge=0.0)


class VersionCounts(_Contract):
    requests: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    latencies_ms: list[float] = Field(default_factory=list)  # the newest, for a p99


class VariantReport(_Contract):
    """One replica's whole count since the rollout stage ``key`` began (not a delta: a lost or
    repeated report changes nothing)."""

    key: str | None  # "{rollout id}:{stage}"; None while no rollout runs
    versions: dict[int, VersionCounts] = Field(default_factory=dict)
    compared: int = Field(default=0, ge=0)  # mirrored texts
    agreed: int = Field(default=0, ge=0)  # ... where the shadow agreed with the stable student


class Selection(_Contract):
    """The cascade's offered ``min_confidence`` for one student version (``training.selective``,
    shown by ``distillery status``): θ, the share of the gate's rows at or above it, their
    accuracy, and its lower bound at probability 1 − δ. θ None: no θ met the target (the teacher
    would answer everything)."""

    threshold: float | None
    coverage: float
    accuracy: float | None
    lower_bound: float | None
    target: float
    delta: float
    rows: int


def stage_key(rollout_id: str, stage: str) -> str:
    """What the replicas' counts of one rollout stage are filed under."""
    return f"{rollout_id}:{stage}"


class Rollout(BaseModel):
    """The rollout in progress (the registry keeps it in ``rollout.json``)."""

    id: str
    candidate: int
    stable: int
    stage: Stage = "shadow"
    started_at: float
    stage_started_at: float
    paused: bool = False
    reason: str = ""
    share: float | None = None  # the canary's share of traffic now (None: canary_share)
    widened_at: float | None = None  # when a held canary's share last rose

    @property
    def key(self) -> str:
        return stage_key(self.id, self.stage)

    def canary_share(self, cfg: RolloutSettings) -> float:
        """The canary's share of traffic now: widened, else the configured one."""
        return cfg.canary_share if self.share is None else self.share


@dataclass(frozen=True)
class Evidence:
    """One version's live record since the stage started."""

    requests: int = 0  # answered (canary) or mirrored (shadow) texts
    errors: int = 0
    p99_ms: float | None = None  # model latency: queue + batch forward, per text
    labelled: int = 0  # teacher labels on this version's answers
    agreed: int = 0  # ... whose top label is the teacher's
    rated: int = 0  # feedback ratings on this version's answers
    negative: int = 0  # ... that were bad


@dataclass(frozen=True)
class OnlineCheck:
    name: str
    state: Literal["pass", "fail", "pending", "skipped"]
    candidate: float | None
    stable: float | None
    limit: float | None  # the candidate's worst acceptable value
    detail: str


Action = Literal["wait", "advance", "rollback", "widen"]


class RolloutVerdict(BaseModel):
    """The online checks' verdict on a rollout stage (``training.rollout.evaluate``) with the
    evidence it was judged on; the registry keeps the one that ended each stage."""

    model_config = ConfigDict(frozen=True)

    action: Action
    reason: str
    checks: list[OnlineCheck] = Field(default_factory=list)
    share: float | None = None  # "widen": the canary's new share
    stable: Evidence = Field(default_factory=Evidence)
    candidate: Evidence = Field(default_factory=Evidence)
    shadow_agreement_with_stable: float | None = None  # shadow: same answer as the stable's


Referee = Literal["teacher", "human"]


@dataclass(frozen=True)
class GateCheck:
    name: str
    candidate: float
    current: float
    threshold: float  # the candidate's worst acceptable value
    passed: bool
    higher_is_better: bool = True


@dataclass(frozen=True)
class ReplyMeasures:
    """A generative student on held-out chats (``training.generate_round.measure``)."""

    chrf: float  # mean sentence chrF against the teacher's replies, 0-100
    logp: float  # the teacher replies' mean per-token log-likelihood under the student
    tokens_per_s: float
    golden_chrf: float | None  # against the replies people corrected, if any
    rows: int
    golden_rows: int


class GateReport(BaseModel):
    """The gate's decision on a candidate against the current version: each check, and who
    refereed (``training.gate.choose_referee``); a generate task's gate also keeps both
    versions' ``ReplyMeasures``."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    checks: list[GateCheck] = Field(default_factory=list)
    reason: str = ""
    referee: Referee = "teacher"  # "human": the teacher was measurably worse on human labels
    candidate: ReplyMeasures | None = None
    current: ReplyMeasures | None = None

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


class OperatorAnswer(_Contract):
    """What an operator's ``promote``, ``rollback``, ``pause`` or ``resume`` did (``ok``), or why
    it does not apply now (``detail``)."""

    ok: bool
    detail: str
    current_version: int | None = None
    rollout: Rollout | None = None


Outcome = Literal["promoted", "shadow", "canary", "rejected"]


class RoundReport(BaseModel):
    """How a round (or a submitted student) ended; the scheduler's ``last_round``."""

    model_config = ConfigDict(frozen=True)

    version: int
    parent: int | None
    promoted: bool  # serves every user now
    reason: str
    gate: GateReport | None  # None: nothing was gated (a generate task's base version)
    train_metrics: dict[str, float]
    rows: int
    seconds: float
    outcome: Outcome  # promoted | shadow or canary (a rollout started there) | rejected
    trigger: TriggerRecord | None = None
    # the time of the newest label the round read (its data window's end); None where nothing
    # was read (a bootstrap base version) or from an older scheduler
    window_end_ts: float | None = None


class TeacherState(_Contract):
    """The labeler's teacher as ``/readyz`` and ``status`` show it: ``up``, ``down`` (its
    breaker is open), ``probing`` (half open), or ``unknown`` when no labeler answered."""

    state: Literal["up", "down", "probing", "unknown"]
    teacher_id: str | None = None
    since: float = 0.0  # Unix s: when the breaker entered this state
    last_error: str | None = None


class Swap(_Contract):
    """An operator's immediate promotion (``Scheduler.promote``): when it was decided, when every
    replica served ``version``, and the seconds in between."""

    version: int
    promoted_at: float  # Unix s
    swapped_at: float  # Unix s
    swap_s: float
