"""Who to believe: a measured reliability for every source of labels, each API key and the teacher.

Model: source s gives the true label with probability r_s, whatever the label (the "one-coin"
case of Dawid & Skene 1979, "Maximum Likelihood Estimation of Observer Error-Rates Using the EM
Algorithm", JRSS C 28(1):20–28). r_s has a Beta(a, b) prior; after A agreements in N weighted
comparisons with reference labels its posterior mean is (a + A) / (a + b + N). A source's
**weight** is its chance-corrected reliability, w = max(0, (r − 1/C) / (1 − 1/C)) (the
correction of Cohen's kappa): 0 for a source no better than a guess, 1 for a perfect one. A key
that flips labels is not inverted and reused: it is ignored.

Sources are compared on the same **item**, a text: a feedback token binds the key that got the
answer, so two keys never rate one request, but they do see the same texts. Between one key and
the teacher alone there is no telling who is right, so the estimate needs
an anchor, and the references are fixed in this order (``estimate``, iterated to a fixed point):

1. keys an operator marked trusted (in open mode, on loopback, the anonymous key ``OPEN_KEY``)
   weigh 1; every other key starts at its prior weight;
2. the human label of an item is the weighted vote of the keys that rated it (``consensus``);
3. the teacher is measured against those human labels, per label it gave and per (label,
   input-length slice), each slice shrunk to its label's posterior (``slice_strength``
   pseudo-counts): a teacher can be right on short texts and wrong on long ones;
4. each key is measured against the other keys' labels on the same items (by their weight)
   and the teacher's confident labels (top probability ≥ ``confident``, by the teacher's weight).

Measured: on 3,000 synthetic items, an adversary flipping its labels on 30% of them beside three
honest keys rating 10% ends at weight 0 and the honest keys at 0.83–0.95, although the only other
reference is an 80% teacher (``tests/unit/test_trust.py``); on VADER, the MiniLM teacher with
its two label prompts swapped ends at weight 0 (``bench/people.py``, docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feedback.trust_report import CellTrust, Prior, SourceTrust, TrustModel, TrustParams

TEACHER = "teacher"


def weight_of(reliability: float, n_labels: int) -> float:
    """Chance-corrected reliability in [0, 1] (4 decimals)."""
    chance = 1.0 / n_labels
    return round(float(max(0.0, (reliability - chance) / (1.0 - chance))), 4)


def _posterior(prior: Prior, agreements: float, comparisons: float) -> float:
    """The Beta posterior mean, to 4 decimals: a key that weighs 0 then changes nothing,
    not even the last float bits of the others' weights (which, through a round's training,
    flipped a gate decision at its margin in bench/people.py)."""
    return round((prior.a + agreements) / (prior.a + prior.b + comparisons), 4)


def consensus(votes: pd.DataFrame, weights: dict[str, float], n_labels: int) -> pd.DataFrame:
    """One human label per item (a text) from its keys' votes (item, key_id, label):
    score_y = Σ_k w_k [v_k = y]; the label is the top score, its weight min(1, top − runner-up)
    (a tie or only weight-0 keys: no label). Returns item, human_label, human_weight."""
    if votes.empty:
        return pd.DataFrame({"item": [], "human_label": [], "human_weight": []})
    w = votes["key_id"].map(weights).fillna(0.0).to_numpy(dtype=float)  # (V,)
    scores = np.zeros((len(votes), n_labels))  # (V, C) one-hot × weight
    scores[np.arange(len(votes)), votes["label"].to_numpy(dtype=int)] = w
    per_item = pd.DataFrame(scores).groupby(votes["item"].to_numpy()).sum()  # (R, C)
    ordered = np.sort(per_item.to_numpy(), axis=1)  # (R, C) ascending
    margin = ordered[:, -1] - (ordered[:, -2] if n_labels > 1 else 0.0)  # (R,)
    label = per_item.to_numpy().argmax(1)  # (R,)
    return pd.DataFrame(
        {
            "item": per_item.index.to_numpy(),
            "human_label": np.where(margin > 0, label, -1),
            "human_weight": np.minimum(margin, 1.0),
        }
    )


def teacher_trust(
    teacher: pd.DataFrame, human: pd.DataFrame, params: TrustParams
) -> tuple[SourceTrust, list[CellTrust]]:
    """The teacher (item, label, confidence, slice) against the human labels."""
    both = teacher.merge(human[human["human_label"] >= 0], on="item")
    hit = (both["label"] == both["human_label"]).to_numpy(dtype=float) * both["human_weight"]
    both = both.assign(hit=hit)
    prior, n = params.teacher_prior, params.n_labels
    overall = _source(TEACHER, prior, float(hit.sum()), float(both["human_weight"].sum()), n)
    cells: list[CellTrust] = []
    for label in range(n):
        mine = both[both["label"] == label]
        r = _posterior(prior, float(mine["hit"].sum()), float(mine["human_weight"].sum()))
        cells.append(_cell(label, "*", r, float(mine["human_weight"].sum()), n))
        shrunk = Prior(a=r * params.slice_strength, b=(1 - r) * params.slice_strength)
        for name, part in mine.groupby("slice"):
            comparisons = float(part["human_weight"].sum())
            rs = _posterior(shrunk, float(part["hit"].sum()), comparisons)
            cells.append(_cell(label, str(name), rs, comparisons, n))
    return overall.model_copy(update={"labels": len(teacher)}), cells


def _cell(label: int, slice_name: str, r: float, comparisons: float, n: int) -> CellTrust:
    return CellTrust(
        label=label, slice=slice_name, reliability=r, weight=weight_of(r, n),
        comparisons=comparisons,
    )  # fmt: skip


def _source(name: str, prior: Prior, agreements: float, comparisons: float, n: int) -> SourceTrust:
    r = _posterior(prior, agreements, comparisons)
    return SourceTrust(
        source=name, reliability=r, weight=weight_of(r, n), agreements=agreements,
        comparisons=comparisons, labels=0,
    )  # fmt: skip


def corrected(agreement: float, reference: float, n_labels: int) -> float:
    """A source's accuracy r from its agreement a with a reference of accuracy q, when both
    err uniformly over the other labels: a = r·q + (1 − r)(1 − q)/(C − 1), so
    r = (a − (1 − q)/(C − 1)) / (q − (1 − q)/(C − 1)), clipped to [0, 1]. (Against an 80%
    teacher a perfect key agrees only 80% of the time; uncorrected it would look 80% right.)"""
    wrong = (1.0 - reference) / (n_labels - 1)
    if reference - wrong <= 1e-6:
        return 1.0 / n_labels  # a reference no better than chance says nothing
    return float(min(1.0, max(0.0, (agreement - wrong) / (reference - wrong))))


def key_trust(
    votes: pd.DataFrame,
    teacher: pd.DataFrame,
    keys: dict[str, tuple[float, float]],
    teacher_refs: pd.DataFrame,
    params: TrustParams,
) -> list[SourceTrust]:
    """Each key against the others' votes on the same items and the confident teacher.
    ``keys``: key → (weight, accuracy) as a reference; ``teacher_refs``: weight and
    reliability per teacher row. Comparisons count by the reference's weight; the agreement is
    corrected for the reference's own errors (``corrected``) before the Beta update."""
    own = votes.rename(columns={"key_id": "ref", "label": "ref_label"})
    own = own.assign(
        ref_w=own["ref"].map(lambda k: keys[k][0]), ref_q=own["ref"].map(lambda k: keys[k][1])
    )
    confident = teacher["confidence"] >= params.confident
    refs = pd.concat(
        [
            own,
            pd.DataFrame(
                {
                    "item": teacher["item"][confident],
                    "ref": TEACHER,
                    "ref_label": teacher["label"][confident],
                    "ref_w": teacher_refs["weight"][confident],
                    "ref_q": teacher_refs["reliability"][confident],
                }
            ),
        ],
        ignore_index=True,
    )
    pairs = votes.merge(refs, on="item")
    pairs = pairs[pairs["ref"] != pairs["key_id"]]
    agree = (pairs["label"] == pairs["ref_label"]).to_numpy(dtype=float) * pairs["ref_w"]
    pairs = pairs.assign(agree=agree, wq=pairs["ref_w"] * pairs["ref_q"])
    sums = pairs.groupby("key_id")[["agree", "ref_w", "wq"]].sum()
    found = []
    for key_id, labels in votes["key_id"].value_counts().items():
        a, n, wq = sums.loc[key_id].tolist() if key_id in sums.index else [0.0, 0.0, 0.0]
        r = corrected(a / n, wq / n, params.n_labels) if n > 0 else 0.0
        source = _source(str(key_id), params.key_prior, r * n, float(n), params.n_labels)
        trusted = key_id in params.trusted
        above = trusted or source.reliability >= params.floor
        update: dict[str, object] = {
            "labels": int(labels),
            "trusted": trusted,
            "above_floor": above,
        }
        if trusted:  # its labels weigh 1 whatever it measures at (an anchor)
            update["weight"] = 1.0
        found.append(source.model_copy(update=update))
    return found


def estimate(votes: pd.DataFrame, teacher: pd.DataFrame, params: TrustParams) -> TrustModel:
    """The reliabilities of every key in ``votes`` (item, key_id, label; one vote per key and
    item, as ``feedback.human_labels.votes`` gives them) and of the teacher (``teacher``: item,
    label, confidence, slice, one row per item)."""
    prior = params.key_prior.mean()
    prior_w = weight_of(prior, params.n_labels)
    ids = sorted(set(votes["key_id"])) if len(votes) else []
    keys = {k: (1.0, 1.0) if k in params.trusted else (prior_w, prior) for k in ids}
    teacher = teacher.reset_index(drop=True)
    cells: list[CellTrust] = []
    overall = _source(TEACHER, params.teacher_prior, 0.0, 0.0, params.n_labels)
    found: list[SourceTrust] = []
    for _ in range(params.passes):
        human = consensus(votes, {k: w for k, (w, _) in keys.items()}, params.n_labels)
        overall, cells = teacher_trust(teacher, human, params)
        model = TrustModel(keys=[], teacher=overall, teacher_cells=cells, n_labels=params.n_labels)
        found = key_trust(votes, teacher, keys, teacher_references(model, teacher), params)
        before = keys
        keys = {k.source: (1.0, 1.0) if k.trusted else (k.weight, k.reliability) for k in found}
        # at the fixed point a weight-0 key has no say at all: the same weights as without it
        if all(abs(keys[k][0] - before[k][0]) < 1e-6 for k in keys):
            break
    return TrustModel(keys=found, teacher=overall, teacher_cells=cells, n_labels=params.n_labels)


def teacher_references(model: TrustModel, teacher: pd.DataFrame) -> pd.DataFrame:
    """(N,) weight and reliability of each teacher row as a reference for the keys."""
    cells = [model.teacher_cell(int(label), str(name)) for label, name in
             zip(teacher["label"], teacher["slice"], strict=True)]  # fmt: skip
    return pd.DataFrame(
        {"weight": [c[0] for c in cells], "reliability": [c[1] for c in cells]},
        index=teacher.index,
    )


def bound(reliability: float, comparisons: float, z: float) -> tuple[float, float]:
    """(lower, upper): a reliability ``z`` standard errors either side of its posterior mean
    (a Wald bound on ``comparisons``, prior pseudo-counts included)."""
    se = float(np.sqrt(reliability * (1 - reliability) / comparisons)) if comparisons > 0 else 1.0
    return reliability - z * se, reliability + z * se


def at_chance(reliability: float, comparisons: float, n_labels: int, z: float) -> bool:
    """Whether the human labels show a source no better than a guess: the upper ``bound`` of its
    reliability at or below 1/C (no comparisons show nothing)."""
    return comparisons > 0 and bound(reliability, comparisons, z)[1] <= 1.0 / n_labels


def teacher_kd_weights(
    model: TrustModel, teacher: pd.DataFrame, z: float, pseudo: float
) -> np.ndarray:
    """(N,) what each teacher row's KD term weighs: 1, or 0 where the human labels show the
    teacher no better than a guess for the label it gave on texts of that length
    (``at_chance``), or for that label overall unless that length is shown better. Not its
    chance-corrected weight: scaling each row's KD by a cell's weight, estimated from a few
    dozen ratings, reshaped what the student learnt. Replaying the e2e run's first movies
    round (stop 33; 36 human labels, a (positive, medium) cell at 0.466 on 16 of them, weight
    0, so a third of the round's rows dropped), as scaled it moved held-out tweets by −.256
    and movie reviews by −.046 (2 seeds); with every KD weight 1, −.005 and +.015; the two
    later rounds of that run gained as much or more with weight 1. ``pseudo``: the prior's
    strength, counted as comparisons (a slice's cell is shrunk to its label's with as many)."""
    chance, out = 1.0 / model.n_labels, []
    for label, name in zip(teacher["label"], teacher["slice"], strict=True):
        r, n = model.teacher_evidence(int(label), str(name))
        if at_chance(r, n + pseudo, model.n_labels, z):
            out.append(0.0)
            continue
        shown_better = bound(r, n + pseudo, z)[0] > chance
        r, n = model.teacher_evidence(int(label), "*")
        out.append(1.0 if shown_better or not at_chance(r, n + pseudo, model.n_labels, z) else 0.0)
    return np.array(out, dtype=float)


def key_weights(model: TrustModel) -> dict[str, float]:
    """Training weight per key: 1 for a trusted key, else its chance-corrected reliability."""
    return {k.source: k.weight for k in model.keys}  # ``key_trust`` set 1 for trusted keys


def reliable_keys(model: TrustModel) -> set[str]:
    """Keys that feed the golden set and the rollout's feedback checks."""
    return {k.source for k in model.keys if k.above_floor}
