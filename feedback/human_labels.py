"""Human labels for a round: what each key said, weighed by how far it can be trusted.

A key's label on a request is its correction, or, with ``confirmations`` on, the served label
when it rated the answer ``confirm_min_rating`` or better without correcting it: the golden set
then holds the easy cases people confirmed beside the hard ones they corrected, so its figures
are not biased towards the student's mistakes. One key counts once per request (its latest
feedback within the join window). ``apply`` measures every key and the teacher
(``feedback.trust``) and writes, per row:

- ``correction``: the human label of the row's text (weighted vote of the keys that rated an
  answer on that text), -1 where there is none;
- ``ce_weight`` (0..1): how sure that vote is, given its keys' weights;
- ``golden_label``: the vote of trusted and reliable keys only (the gate's golden set);
- ``teacher_weight`` (0..1): the teacher's chance-corrected reliability where it gave this row's
  top label, on texts of this length (the gate's trusted rows under the human referee);
- ``teacher_kd_weight`` (0 or 1): what the row's KD term weighs: 0 where the human labels show
  the teacher no better than a guess there (``feedback.trust.teacher_kd_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from distillery.settings import TrustSettings
from distillery.task import Task, length_slice
from feedback.ensemble_trust import member_trust, remix
from feedback.examples import from_keys, join, on_time
from feedback.tokens import OPEN_KEY
from feedback.trust import (
    consensus,
    estimate,
    key_weights,
    reliable_keys,
    teacher_kd_weights,
    teacher_references,
)
from feedback.trust_report import Prior, TrustModel, TrustParams


def votes(
    rows: pd.DataFrame, feedback: pd.DataFrame, task: Task, window_s: float, settings: TrustSettings
) -> pd.DataFrame:
    """One label per (text, key) on the labelled ``rows``, the key's latest within the join
    window: request_id, item (the text: what keys are compared on), key_id, label, rating. A key
    that sent one text twice counts once for it."""
    empty = pd.DataFrame({"request_id": [], "item": [], "key_id": [], "label": [], "rating": []})
    if rows.empty or feedback.empty:
        return empty
    fb = on_time(rows, feedback, window_s, per_key=True)  # oldest first
    names = {name: i for i, name in enumerate(task.label_names)}
    corrected = fb["corrected_label"].map(names) if "corrected_label" in fb else None
    label = pd.Series(-1, index=fb.index) if corrected is None else corrected.fillna(-1)
    if settings.confirmations:
        confirms = (label < 0) & (fb["rating"] >= settings.confirm_min_rating)
        label = label.where(~confirms, fb["predicted_label"].map(names).fillna(-1))
    texts = pd.Series(rows["text"].to_numpy(), index=rows["request_id"].to_numpy())
    fb = fb.assign(label=label.astype(int), item=fb["request_id"].map(texts))
    columns = ["request_id", "item", "key_id", "label", "rating"]
    voted = fb[fb["label"] >= 0].drop_duplicates(["item", "key_id"], keep="last")
    return voted[columns].reset_index(drop=True)


def teacher_view(rows: pd.DataFrame) -> pd.DataFrame:
    """The teacher as one more annotator, once per text: item, label (top), confidence, slice."""
    rows = rows.drop_duplicates("text")
    probs = np.array(list(rows["teacher_probs"]), dtype=float).reshape(len(rows), -1)  # (N, C)
    return pd.DataFrame(
        {
            "item": rows["text"].to_numpy(),
            "label": probs.argmax(1) if len(rows) else np.zeros(0, dtype=int),
            "confidence": probs.max(1) if len(rows) else np.zeros(0),
            "slice": [length_slice(t) for t in rows["text"]],
        }
    )


def params(settings: TrustSettings, n_labels: int, trusted: set[str]) -> TrustParams:
    marked = set(trusted) | settings.trusted_ids()
    if settings.open_trusted:
        marked.add(OPEN_KEY)
    return TrustParams(
        n_labels=n_labels,
        key_prior=_prior(settings.key_prior_reliability, settings.key_prior_strength),
        teacher_prior=_prior(settings.teacher_prior_reliability, settings.teacher_prior_strength),
        trusted=frozenset(marked),
        confident=settings.confident,
        floor=settings.floor,
    )


def _prior(reliability: float, strength: float) -> Prior:
    return Prior(a=reliability * strength, b=(1 - reliability) * strength)


@dataclass(frozen=True)
class HumanLabels:
    rows: pd.DataFrame  # the joined rows with correction, ce_weight, golden_label, teacher_weight
    trust: TrustModel | None  # None with trust off
    votes: int  # (request, key) labels behind them

    def teacher_at_chance(self, min_labels: int) -> bool:
        """The estimate puts the teacher at weight 0 (no better than a guess) on at least
        ``min_labels`` human labels: it cannot referee the gate."""
        t = None if self.trust is None else self.trust.teacher
        return t is not None and t.weight == 0.0 and t.comparisons >= min_labels


def _estimate(
    labels: pd.DataFrame,
    feedback: pd.DataFrame,
    rows: pd.DataFrame,
    voted: pd.DataFrame,
    task: Task,
    settings: TrustSettings,
    window_s: float,
    trusted: set[str] | None,
) -> tuple[pd.DataFrame, pd.DataFrame, TrustModel]:
    """The trust estimate over (``labels``, their joined ``rows``). With an ensemble teacher its
    members are measured too, and once each has enough human labels the labels are mixed again
    by them and the teacher measured on that mix (``feedback.ensemble_trust``)."""
    n = len(task.label_names)
    p = params(settings, n, trusted or set())
    model = estimate(voted, teacher_view(rows), p)
    human = consensus(voted, key_weights(model), n)
    members = member_trust(rows, human, p, settings.ensemble_min_labels)
    if any(m.share is not None for m in members):
        labels = remix(labels, members)
        rows = join(labels, feedback, task, window_s)
        model = estimate(voted, teacher_view(rows), p)
    return labels, rows, model.model_copy(update={"members": members})


def apply(
    labels: pd.DataFrame,
    feedback: pd.DataFrame,
    task: Task,
    settings: TrustSettings,
    window_s: float,
    trusted: set[str] | None = None,
) -> HumanLabels:
    """The round's rows (``feedback.examples.join`` of ``labels``), with their human labels."""
    rows = join(labels, feedback, task, window_s)
    if rows.empty:
        columns = ("ce_weight", "golden_label", "teacher_weight", "teacher_kd_weight")
        empty: dict[str, list[float]] = {c: [] for c in columns}
        return HumanLabels(rows.assign(**empty), None, 0)
    voted = votes(rows, feedback, task, window_s, settings)
    n = len(task.label_names)
    if settings.mode == "off":
        weights = {k: 1.0 for k in set(voted["key_id"])}
        model, golden_votes, t_weight = None, voted, np.ones(len(rows))
        kd = t_weight
    else:
        labels, rows, model = _estimate(
            labels, feedback, rows, voted, task, settings, window_s, trusted
        )
        teacher = teacher_view(rows)
        weights, reliable = key_weights(model), reliable_keys(model)
        golden_votes = from_keys(voted, reliable)
        # ratings that tune the KD weights (``training.data.kd_weights``) come from reliable keys
        rows = join(labels, from_keys(feedback, reliable), task, window_s)
        t_weight = _per_row(teacher_references(model, teacher)["weight"], teacher, rows)
        kd_weights = teacher_kd_weights(
            model, teacher, settings.teacher_chance_z, settings.teacher_prior_strength
        )
        kd = _per_row(kd_weights, teacher, rows)
    human = consensus(voted, weights, n).set_index("item")
    golden = consensus(golden_votes, weights, n).set_index("item")
    ids = rows["text"]
    rows = rows.assign(
        correction=ids.map(human["human_label"]).fillna(-1).astype(int).to_numpy(),
        ce_weight=ids.map(human["human_weight"]).fillna(0.0).astype(float).to_numpy(),
        golden_label=ids.map(golden["human_label"]).fillna(-1).astype(int).to_numpy(),
        teacher_weight=t_weight,
        teacher_kd_weight=kd,
    )
    return HumanLabels(rows, model, len(voted))


def _per_row(
    values: pd.Series | np.ndarray, teacher: pd.DataFrame, rows: pd.DataFrame
) -> np.ndarray:
    """(N,) for each of ``rows``, the value (one per row of ``teacher_view``, (T,)) of its
    text."""
    per_text = pd.Series(np.asarray(values, dtype=float), index=teacher["item"].to_numpy())
    return rows["text"].map(per_text).to_numpy(dtype=float)
