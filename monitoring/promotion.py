"""The promote path: a registered candidate → shadow → canary → full, or back, on live evidence.

One object owns every step after the gate (``training.cycle.admit`` registers, gates and starts
the rollout in the registry), in the order they happen:

1. ``candidate_spec`` / ``serve_state``: what Serve should run, read from the registry (the
   current version and the rollout's candidate, as ``distillery.contracts.StudentConfig``);
2. ``apply`` → ``hot_swap``: tell Serve (``reconfigure`` in place) when that changed, and with
   ``wait`` until every replica answers with the current version;
3. ``evidence``: the replicas' ``VariantReport``s, the store's teacher labels and feedback since the
   stage began;
4. ``tick``: ``training.rollout.evaluate`` judges them; wait, advance, widen a held canary, or
   roll back;
5. ``operate``: an operator's promote, rollback, pause or resume.

The scheduler (``monitoring.scheduler``) calls ``tick`` every ``poll_s`` and holds its round lock
around the calls that must not overlap a round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from distillery.contracts import (
    CandidateSpec,
    Evidence,
    OperatorAnswer,
    Rollout,
    RolloutVerdict,
    StudentConfig,
    VariantReport,
)
from distillery.settings import Settings
from feedback.examples import from_keys, labels_predicted_since, read_kind
from feedback.keys import rating_keys
from services import deploy
from services.variants import merge
from training import rollout
from training.registry import Registry

log = logging.getLogger(__name__)
HEAL_S = 30.0  # how often Serve's deployed version is checked against the registry
Replicas = Callable[[], dict[str, int]]  # Serve replica id → the version it answers with


def candidate_spec(settings: Settings, registry: Registry) -> CandidateSpec | None:
    """The rollout's candidate as the Serve replicas take it, or None: a replica on any node
    loads ``version`` from the model ``store`` (``path``: where it is)."""
    running = registry.rollout()
    if running is None:
        return None
    cfg = settings.rollout
    return CandidateSpec(
        version=running.candidate,
        path=registry.location(running.candidate),
        store=registry.store_url,
        stage=running.stage,
        share=cfg.shadow_share if running.stage == "shadow" else running.canary_share(cfg),
        id=running.id,
    )


def serve_state(settings: Settings, registry: Registry) -> StudentConfig | None:
    """What Serve should run now: the registry's current version and any candidate."""
    version = registry.current()
    if version is None:
        return None
    return StudentConfig(
        version=version,
        path=registry.location(version),
        store=registry.store_url,
        candidate=candidate_spec(settings, registry),
    )


def hot_swap(
    settings: Settings, registry: Registry, dashboard_url: str, replicas: Replicas | None = None
) -> int:
    """Point Serve at the registry's state (``reconfigure`` in place), and wait until Serve has
    applied it and, with ``replicas``, every replica answers with the current version."""
    state = serve_state(settings, registry)
    if state is None:
        raise RuntimeError("the registry has no promoted version to serve")
    deploy.deploy(dashboard_url, deploy.serve_config(settings, state))
    deploy.wait_running(dashboard_url, state.version)
    if replicas is not None:
        deploy.wait_serving(dashboard_url, state.version, replicas)
    return state.version


class Promotion:
    """Drives the registry's rollout and keeps Serve in step with the registry (thread-safe)."""

    def __init__(
        self, settings: Settings, registry: Registry, dashboard_url: str | None, replicas: Replicas
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.dashboard_url = dashboard_url
        self.replicas = replicas
        self.metrics: Any = None  # ``distillery.metrics.LoopMetrics`` once the loop runs
        self.reports: dict[str, VariantReport] = {}  # replica id → its newest rollout counts
        self.last_verdict: RolloutVerdict | None = None
        self.lock = threading.RLock()
        self._applied: StudentConfig | None = None  # what Serve was last told to run
        self._next_heal = 0.0  # monotonic s
        self._referees: dict[str, str] = {}  # rollout id → its candidate's gate referee

    def _referee(self, running: Rollout) -> str:
        """Who judged the candidate at the gate ("teacher" or "human"), read from the registry
        once per rollout rather than on every tick (a remote model store is a network read)."""
        if running.id not in self._referees:
            gate = self.registry.get(running.candidate).gate
            self._referees = {running.id: "teacher" if gate is None else gate.referee}
        return self._referees[running.id]

    def report_variants(self, replica: str, report: VariantReport) -> None:
        self.reports[replica] = report

    # ---- Serve in step with the registry ----

    def apply(self, wait: bool) -> None:
        """Tell Serve the registry's state if it changed since it was last told; with ``wait``,
        until every replica answers with the current version."""
        state = serve_state(self.settings, self.registry)
        if self.dashboard_url is None or state is None or state == self._applied:
            return
        replicas = self.replicas if wait else None
        hot_swap(self.settings, self.registry, self.dashboard_url, replicas)
        self._applied = state

    def redeploy(self) -> None:
        """Deploy the registry's state even if it was deployed before; wait for every replica."""
        if self.dashboard_url is None:
            raise RuntimeError("no dashboard address: cannot deploy")
        with self.lock:
            self._applied = None
            self.apply(wait=True)

    def heal(self, round_running: bool) -> None:
        """Every ``HEAL_S``: if Serve's target config names another version than the registry's
        current (e.g. a KubeRay operator restart re-applied its ``serveConfigV2``), forget what
        was applied, so that ``apply`` deploys the registry's state again."""
        if self.dashboard_url is None or time.monotonic() < self._next_heal:
            return
        self._next_heal = time.monotonic() + HEAL_S
        if round_running:  # a round's outcome is applied when it ends
            return
        deployed, current = deploy.deployed_version(self.dashboard_url), self.registry.current()
        if deployed is not None and current is not None and deployed != current:
            log.warning(
                "Serve runs v%d but the registry serves v%d: redeploying", deployed, current
            )
            self._applied = None

    # ---- the rollout ----

    def evidence(self, running: Rollout) -> tuple[Evidence, Evidence, float | None]:
        """(stable, candidate, shadow agreement with the stable student) live since the stage
        began: the replicas' counts, the store's teacher labels (in shadow, the same mirrored
        texts for both) and feedback."""
        merged = merge(list(self.reports.values()), running.key)
        store, since = self.settings.paths.store_dir, running.stage_started_at
        labels = labels_predicted_since(store, since)
        feedback = read_kind(store, "feedback", written_after=since)
        feedback = from_keys(feedback, rating_keys(self.settings))  # trusted or reliable only
        shadow = running.stage == "shadow"
        if not shadow and "reason" in labels:
            # canary: each version's own margins and novelty steer the targeted picks, so only
            # uniform picks compare the two fairly (measured: 0.57 vs 0.86 on all picks for a
            # candidate the gate had found as good)
            labels = labels[labels["reason"] == "uniform"]
        paired = labels
        if shadow:
            mirrored = "shadow_version" in labels and not labels.empty
            paired = (
                labels[labels["shadow_version"] == running.candidate] if mirrored else labels[:0]
            )
        bad = self.settings.train.bad_rating_max
        out = []
        for version, rows, own in (
            (running.stable, paired, False),
            (running.candidate, labels, shadow),
        ):
            labelled, agreed = rollout.teacher_evidence(rows, version, own)
            rated, negative = rollout.feedback_evidence(feedback, version, bad)
            base = merged.evidence.get(version, Evidence())
            out.append(
                replace(base, labelled=labelled, agreed=agreed, rated=rated, negative=negative)
            )
        with_stable = merged.agreed / merged.compared if merged.compared else None
        return out[0], out[1], with_stable

    def tick(self, round_running: bool) -> RolloutVerdict | None:
        """Judge the running rollout on its evidence and act: wait, advance or roll back."""
        with self.lock:
            self.heal(round_running)
            self.apply(wait=False)
            running = self.registry.rollout()
            self._metric_stage(running)
            if running is None or running.paused:
                return None
            stable, candidate, with_stable = self.evidence(running)
            now = time.time()
            elapsed = now - running.stage_started_at
            held = now - (running.widened_at or running.stage_started_at)
            verdict = rollout.evaluate(
                running.stage, elapsed, stable, candidate, self.settings.rollout,
                self._referee(running), running.canary_share(self.settings.rollout), held,
            )  # fmt: skip
            record = RolloutVerdict(
                action=verdict.action, reason=verdict.reason, checks=verdict.checks,
                share=verdict.share, stable=stable, candidate=candidate,
                shadow_agreement_with_stable=with_stable,
            )  # fmt: skip
            self.last_verdict = record
            self._act(running, verdict.action, f"automatic: {verdict.reason}", record)
            return record

    def _act(self, running: Rollout, action: str, reason: str, record: RolloutVerdict) -> None:
        """Carry out the verdict's ``action`` in the registry (``record`` kept with it), then
        tell Serve; advancing waits until every replica has the new state."""
        if action == "rollback":
            self.registry.roll_back(reason, record)
            self._transition("rolled_back")
        elif action == "advance" and running.stage == "shadow":
            self.registry.advance("canary", reason, record)
            self._transition("canary")
        elif action == "advance":
            self.registry.finish(reason, record)
            self._transition("promoted")
        elif action == "widen" and record.share is not None:
            self.registry.widen(record.share, reason)
            self._transition("widened")
        if action != "wait":
            log.info("rollout of v%d: %s", running.candidate, reason)
            self.apply(wait=action == "advance")

    # ---- operator actions ----

    def operate(self, action: str, reason: str, version: int | None = None) -> OperatorAnswer:
        """An operator's ``promote`` (``version``, default the candidate), ``rollback``,
        ``pause`` or ``resume``; not ``ok``, with why, when it does not apply now."""
        try:
            with self.lock:
                if action == "promote":
                    detail = self.promote_now(version, reason)
                elif action == "rollback":
                    detail = self._roll_back_now(reason)
                elif action in ("pause", "resume"):
                    self.registry.set_paused(action == "pause", reason)
                    detail = f"rollout {action}d"
                else:
                    raise ValueError(f"unknown action {action!r}")
                self.apply(wait=action in ("promote", "rollback"))
        except (ValueError, KeyError) as exc:
            return OperatorAnswer(ok=False, detail=str(exc).strip("'\""))
        return OperatorAnswer(
            ok=True, detail=detail, current_version=self.registry.current(),
            rollout=self.registry.rollout(),
        )  # fmt: skip

    def promote_now(self, version: int | None, reason: str) -> str:
        """Make ``version`` (default: the rollout's candidate) the served one in the registry."""
        running = self.registry.rollout()
        if version is None and running is None:
            raise ValueError("no rollout in progress: name the version to promote")
        if running is not None and version in (None, running.candidate):
            self.registry.finish(reason)
            self._transition("promoted")
            return f"v{running.candidate} promoted"
        assert version is not None
        self.registry.get(version)  # raises KeyError naming an unknown version
        if running is not None:
            self.registry.roll_back(f"superseded: v{version} promoted ({reason})")
            self._transition("rolled_back")
        self.registry.promote(version, reason)
        self._transition("promoted")
        return f"v{version} promoted"

    def _roll_back_now(self, reason: str) -> str:
        if self.registry.rollout() is not None:
            version = self.registry.roll_back(reason)
            self._transition("rolled_back")
            return f"v{version} rolled back; v{self.registry.current()} serves everyone"
        previous = self.registry.demote(reason)
        self._transition("rolled_back")
        return f"rolled back to v{previous}"

    def _transition(self, to: str) -> None:
        if self.metrics is not None:
            self.metrics.rollout_transitions.inc(tags={"to": to})

    def _metric_stage(self, running: Rollout | None) -> None:
        if self.metrics is not None:
            stage = 0 if running is None else {"shadow": 1, "canary": 2}[running.stage]
            self.metrics.rollout_stage.set(stage)
