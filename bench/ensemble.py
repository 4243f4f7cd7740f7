"""The ensemble teacher mixed by measured agreement with people, against the task file's fixed mix
(``make bench-ensemble``; issue 14: "weigh its members by their measured agreement with human
labels, once the learning-from-people issue provides that measure").

On both tasks of ``bench.teachers`` (VADER sentiment, two labels; VADER source, four), the
ensemble of the local LLM (its real llama.cpp server, answers through the label cache
``state/bench-teachers``) and MiniLM zero-shot labels the held-out texts and a pool of "rated"
texts, through ``models.ensemble.EnsembleTeacher`` as the labeler calls it, so each label carries
every member's own answer. Then, for k human labels (the first k of the pool in a random order,
``--draws`` orders), each member is measured on them as a round measures it
(``feedback.ensemble_trust.member_trust``, with the default teacher prior of
``DISTILLERY_TRUST_TEACHER_PRIOR_*``), the held-out answers are mixed again by the measured
shares (``remix``'s rule), and scored against VADER's human labels. Writes
``bench/results/ensemble.{json,md}``.

    python -m bench.ensemble [--eval-per-domain 100] [--rated-per-domain 100] [--draws 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

import numpy as np
import pandas as pd

from bench.harness import ROOT, markdown_table, publish
from bench.labeler import llm_teacher_settings
from bench.offline_students import Rows, accuracy, local_llm, split
from bench.teachers import STATE, TASKS
from distillery.settings import TeacherSettings, TrustSettings
from distillery.task import Task, load_task
from feedback.ensemble_trust import member_trust
from feedback.human_labels import params
from models.ensemble import EnsembleTeacher, mix
from models.factory import embedding_teacher, llm_teacher
from models.label_cache import CachedTeacher, LabelCache
from models.teacher import MemberProbs, softmax

BUDGETS = (10, 25, 50, 100, 200, 400)  # human labels the members are measured on
NAMES = {"llm": "LLM", "minilm": "MiniLM"}


def members_of(ensemble: EnsembleTeacher, texts: list[str], batch: int = 8) -> list[MemberProbs]:
    """Each member's answers to ``texts``, (N, C) and readable (N,), as the labeler gets them."""
    parts = [ensemble.label(texts[i : i + batch]).members for i in range(0, len(texts), batch)]
    return [
        MemberProbs(
            m.teacher_id,
            np.concatenate([p[j].probs for p in parts]),
            np.concatenate([p[j].readable for p in parts]),
        )
        for j, m in enumerate(parts[0])
    ]


def mixed_accuracy(members: list[MemberProbs], weights: list[float], evals: Rows) -> float:
    logs = [np.log(np.clip(m.probs, 1e-12, None)) for m in members]
    readable = np.stack([m.readable for m in members])  # (M, N)
    return accuracy(softmax(mix(logs, weights, readable)), evals)[0]


def measured_shares(
    members: list[MemberProbs], rated: Rows, order: list[int], k: int, task: Task
) -> list[float]:
    """Each member's share after measuring it on the first ``k`` rated texts of ``order``."""
    cells = [
        [{"teacher_id": m.teacher_id, "probs": list(m.probs[i])} for m in members if m.readable[i]]
        for i in range(len(rated.texts))
    ]
    rows = pd.DataFrame({"text": rated.texts, "members": cells})
    chosen = order[:k]
    human = pd.DataFrame(
        {
            "item": [rated.texts[i] for i in chosen],
            "human_label": [rated.labels[i] for i in chosen],
            "human_weight": 1.0,
        }
    )
    p = params(TrustSettings(), len(task.label_names), set())
    found = {m.source: m.share for m in member_trust(rows, human, p, min_labels=1)}
    return [found.get(m.teacher_id) or 0.0 for m in members]


def measure_task(name: str, args: argparse.Namespace, url: str, say: Any) -> dict[str, Any]:
    task = load_task(TASKS[name])
    evals, rated = split(task, ROOT / "data", args.eval_per_domain, 4 * args.rated_per_domain, 0)
    fixed = task.ensemble or {"llm": 0.5, "embedding": 0.5}
    llm = CachedTeacher(
        llm_teacher(llm_teacher_settings(url, args.threads), task),
        LabelCache(STATE / "teacher-cache.sqlite"),
    )
    minilm = embedding_teacher(TeacherSettings(model="minilm"), task)
    weights = [fixed.get("llm", 0.5), fixed.get("embedding", 0.5)]
    ensemble = EnsembleTeacher([(llm, weights[0]), (minilm, weights[1])])
    say(f"{name}: the ensemble labels {len(evals.texts)} held-out + {len(rated.texts)} rated texts")
    on_evals, on_rated = members_of(ensemble, evals.texts), members_of(ensemble, rated.texts)
    alone = {key: mixed_accuracy([m], [1.0], evals) for key, m in zip(NAMES, on_evals, strict=True)}
    rows = []
    for k in [b for b in BUDGETS if b <= len(rated.texts)]:
        accs, shares = [], []
        for draw in range(args.draws):
            order = list(range(len(rated.texts)))
            random.Random(draw).shuffle(order)
            share = measured_shares(on_rated, rated, order, k, task)
            accs.append(mixed_accuracy(on_evals, share, evals) if sum(share) > 0 else None)
            shares.append(share[0])
        scored = [a for a in accs if a is not None]
        rows.append({
            "human_labels": k, "accuracy": round(statistics.mean(scored), 3) if scored else None,
            "min": min(scored, default=None), "max": max(scored, default=None),
            "llm_share": round(statistics.mean(shares), 3),
        })  # fmt: skip
        say(f"  {k} human labels: {rows[-1]}")
    return {
        "task": name,
        "eval_texts": len(evals.texts),
        "rated_texts": len(rated.texts),
        "members": alone,
        "fixed": {"weights": weights, "accuracy": mixed_accuracy(on_evals, weights, evals)},
        "measured": rows,
    }


def table(result: dict[str, Any]) -> str:
    header = ["task", "LLM alone", "MiniLM alone", "task file's mix (LLM, MiniLM)"]
    header += [f"measured on {k} (LLM share)" for k in BUDGETS]
    body = []
    for t in result["tasks"]:
        by_k = {r["human_labels"]: r for r in t["measured"]}
        cells = [
            f"{by_k[k]['accuracy']} ({by_k[k]['llm_share']:.2f})" if k in by_k else "—"
            for k in BUDGETS
        ]
        w = t["fixed"]["weights"]
        body.append([t["task"], t["members"]["llm"], t["members"]["minilm"],
                     f"{t['fixed']['accuracy']} ({w[0]:g}, {w[1]:g})", *cells])  # fmt: skip
    draws = result["settings"]["draws"]
    return markdown_table(header, body) + (
        f"\nAccuracy against VADER's human labels on each task's held-out texts; measured: the "
        f"mean over {draws} random choices of which rated texts have a human label.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--eval-per-domain", type=int, default=100)
    parser.add_argument("--rated-per-domain", type=int, default=100)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="the LLM server's threads")
    args = parser.parse_args()
    with local_llm(args.threads, STATE) as server:
        tasks = [measure_task(name, args, server.url, print) for name in TASKS]
    result = {"tasks": tasks, "settings": vars(args)}
    publish("ensemble", result, table(result))


if __name__ == "__main__":
    main()
