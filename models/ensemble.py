"""A weighted log-linear mix of teachers (a product of experts; Hinton 2002):
log p(c | x) = Σ_m w_m log p_m(c | x) − log Z(x), with Σ w_m = 1 over the members that could read
the text. A row one member cannot read is answered by the others; only a row none can read is
unreadable. The labeler mixes by the task file's weights (``ensemble:``) and sends each member's
own answer with the label; a round mixes them again by each member's measured agreement with
people once it has enough human labels (``feedback.ensemble_trust``), and from then on the
labeler mixes by those shares too (``reweigh``, followed by ``services.teacher_mix``), so the
cascade's answers and the disagreement it reports come from the mix the rounds train on.

The ensemble's ``teacher_id`` names its members and configured weights, not the shares in use: a
re-mix changes no member's answer (every label keeps them all), so it is not a new teacher and
does not set off the old-label policy of a teacher change.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.teacher import (
    MemberProbs,
    Teacher,
    TeacherBatch,
    TeacherCost,
    TeacherHealth,
    prompt_hash,
    softmax,
)


def mix(log_probs: list[np.ndarray], weights: list[float], readable: np.ndarray) -> np.ndarray:
    """log_probs: M arrays (B, C); readable (M, B) bool → mixed logits (B, C)."""
    stacked = np.stack(log_probs)  # (M, B, C)
    w = np.asarray(weights, dtype=np.float64)[:, None] * readable  # (M, B)
    total = w.sum(0, keepdims=True)  # (1, B)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    mixed: np.ndarray = (w[:, :, None] * stacked).sum(0)  # (B, C)
    return mixed


def ensemble_id(members: list[tuple[str, float]]) -> str:
    """``ensemble:<hash of the members' ids and weights>``."""
    return f"ensemble:{prompt_hash(members)}"


class EnsembleTeacher:
    def __init__(self, members: list[tuple[Teacher, float]]) -> None:
        if not members or any(weight <= 0 for _, weight in members):
            raise ValueError(f"an ensemble needs members with weights > 0, got {members}")
        self.members = members
        self._configured = [w for _, w in members]
        self.weights = list(self._configured)  # the mix in use (``reweigh``)
        self._id = ensemble_id([(t.teacher_id, w) for t, w in members])

    def reweigh(self, shares: Mapping[str, float]) -> dict[str, float]:
        """Mix by the measured ``shares`` from now on; shares that leave every member at 0 (or
        name none of them) restore the task file's weights. A member at share 0 still labels
        every text, so the rounds keep measuring it."""
        measured = [max(float(shares.get(t.teacher_id, 0.0)), 0.0) for t, _ in self.members]
        self.weights = measured if sum(measured) > 0 else list(self._configured)
        return {t.teacher_id: w for (t, _), w in zip(self.members, self.weights, strict=True)}

    @property
    def teacher_id(self) -> str:
        return self._id

    @property
    def has_states(self) -> bool:
        return any(t.has_states for t, _ in self.members)

    def health(self) -> TeacherHealth:
        worst = [t.health() for t, _ in self.members]
        down = [h for h in worst if not h.up]
        return down[0] if down else worst[0].model_copy(update={"teacher_id": self._id})

    def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
        batches = [t.label(texts, with_states and t.has_states) for t, _ in self.members]
        readable = np.ones((len(batches), len(texts)), dtype=bool)
        for m, batch in enumerate(batches):
            readable[m, list(batch.unreadable)] = False
        log_probs = [np.log(np.clip(b.probs, 1e-12, None)) for b in batches]
        weights = self.weights
        logits = mix(log_probs, weights, readable).astype(np.float32)
        # a text only zero-share members could read: their configured mix answers it
        orphans = (np.asarray(weights)[:, None] * readable).sum(0) <= 0  # (B,)
        if orphans.any():
            logits[orphans] = mix(log_probs, self._configured, readable)[orphans]
        cost = TeacherCost()
        for batch in batches:
            cost.add(batch.cost)
        unreadable = {
            i: " | ".join(b.unreadable[i] for b in batches if i in b.unreadable)
            for i in range(len(texts))
            if not readable[:, i].any()
        }
        states = next((b.states for b in batches if b.states is not None), None)
        probs = softmax(logits) if len(texts) else logits
        members = tuple(
            MemberProbs(t.teacher_id, b.probs, readable[m])
            for m, ((t, _), b) in enumerate(zip(self.members, batches, strict=True))
        )
        return TeacherBatch(probs.astype(np.float32), logits, states, unreadable, cost, members)
