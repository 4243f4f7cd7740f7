"""Which member of an ensemble teacher to believe: each measured against people, and the round's
labels mixed again by it (issue 14: weigh the members by their agreement with human labels).

The labeler mixes an ensemble's members (``models.ensemble``), by the task file's weights until a
round has measured shares and by those shares after (``services.teacher_mix``), and keeps each
member's own answer on the label (``TeacherLabel.members``). Here each member is one
more annotator, measured as the teacher is (``feedback.trust.teacher_trust``: a Beta posterior on
its chance of giving the human label, the one-coin model of Dawid & Skene 1979), and its share of
the round's mix is its weight, the chance-corrected reliability (0 for a member no better than
a guess), over the members' sum. Until every member has ``min_labels`` human labels to be
measured on, the task file's weights stand: the labels stay as the labeler mixed them.

Why: a fixed mix is only as good as its guess. On VADER's four-way source task, the local LLM is
at chance (0.258) and MiniLM at 0.688; half and half, the ensemble fell to 0.48
(``bench/results/teachers.md``). Mixed by the shares measured on 100 human labels it came to
0.668, and on 200 to 0.680, against MiniLM's 0.688 alone; on sentiment, where both members are
good, the shares stay near half and half and the ensemble keeps its 0.80
(``bench/results/ensemble.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from distillery.task import length_slice
from feedback.trust import teacher_trust
from feedback.trust_report import SourceTrust, TrustParams
from models.ensemble import mix
from models.teacher import softmax


def answers(value: Any) -> list[tuple[str, np.ndarray]]:
    """A stored ``members`` cell as (teacher_id, probs (C,)) pairs; none for a label that no
    ensemble gave (a missing cell reads back as None or NaN)."""
    if value is None or isinstance(value, float):
        return []
    return [(str(a["teacher_id"]), np.asarray(a["probs"], dtype=float)) for a in value]


def member_views(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each member as an annotator, once per text: item, label (its top), confidence, slice."""
    found: dict[str, list[tuple[str, int, float, str]]] = {}
    if "members" not in rows:
        return {}
    for text, cell in zip(rows["text"], rows["members"], strict=True):
        for teacher_id, probs in answers(cell):
            found.setdefault(teacher_id, []).append(
                (text, int(probs.argmax()), float(probs.max()), length_slice(text))
            )
    columns = ["item", "label", "confidence", "slice"]
    return {
        teacher_id: pd.DataFrame(seen, columns=columns).drop_duplicates("item")
        for teacher_id, seen in found.items()
    }


def member_trust(
    rows: pd.DataFrame, human: pd.DataFrame, params: TrustParams, min_labels: int
) -> list[SourceTrust]:
    """Every member's posterior against ``human`` (item, human_label, human_weight), with its
    ``share`` of the mix once all members have ``min_labels`` comparisons (else None)."""
    measured = [
        teacher_trust(view, human, params)[0].model_copy(
            update={"source": teacher_id, "labels": len(view)}
        )
        for teacher_id, view in sorted(member_views(rows).items())
    ]
    total = sum(m.weight for m in measured)
    if not measured or total <= 0 or min(m.comparisons for m in measured) < min_labels:
        return measured
    return [m.model_copy(update={"share": round(m.weight / total, 4)}) for m in measured]


def remix(labels: pd.DataFrame, members: list[SourceTrust]) -> pd.DataFrame:
    """``labels`` with each ensemble label's logits and probs mixed again by the members'
    shares (``models.ensemble.mix``: log-linear, over the members that read the text); a label
    whose members all have share 0 or none keeps the labeler's mix."""
    shares = {m.source: m.share for m in members if m.share is not None}
    if not shares or "members" not in labels:
        return labels
    logits, probs = list(labels["teacher_logits"]), list(labels["teacher_probs"])
    for i, cell in enumerate(labels["members"]):
        got = answers(cell)
        weights = [shares.get(teacher_id, 0.0) for teacher_id, _ in got]
        if sum(weights) <= 0:
            continue
        logs = [np.log(np.clip(p, 1e-12, None))[None, :] for _, p in got]  # M × (1, C)
        mixed = mix(logs, weights, np.ones((len(got), 1), dtype=bool))  # (1, C)
        logits[i] = [float(x) for x in mixed[0]]
        probs[i] = [float(x) for x in softmax(mixed)[0]]
    return labels.assign(teacher_logits=logits, teacher_probs=probs)
