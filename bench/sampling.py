"""Targeted against uniform teacher sampling after a domain shift: ``python -m bench.sampling``.

1. v1 is distilled (scratch settings) on the 1,600 seed movie sentences ``seed_rows`` picks, and
   gets its novelty reference. Traffic then shifts: a fixed-seed shuffle of 3,000 requests, 60%
   unseen movie sentences and 40% tweets. Held out: 800 tweets and 800 movies used nowhere else.
2. Teacher logits for every text are computed once (``state/bench-sampling/teacher.npz``).
3. The stream goes through v1 once (probabilities and novelty per request).
4. Per budget B: **targeted** = the real ``services.sampling.Sampler`` walks the stream in order
   on a simulated clock (the stream spans 10 minutes; the bucket holds B/10 labels a minute),
   stopping at B picks; **uniform** = as many requests drawn uniformly from the stream. Each
   retrains from v1 (``epochs``, ``learning_rate``) on its picks' teacher labels plus as many
   replayed seed movies (KD only), once per seed; means reported.
5. On both eval sets: the teacher gap on confident texts (the headline), the accuracy gap to the
   teacher against human labels, plain agreement; and "labels saved": the uniform budget that
   matches targeted's tweet teacher gap at B, minus B (``bench.sampling_metrics``).

Writes ``bench/results/sampling.json`` and ``sampling.md`` (``bench.sampling_report``); v1 and
the teacher cache stay in ``state/bench-sampling`` (``bench.sampling_data``) so a rerun only
retrains the candidates.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.harness import write_results
from bench.sampling_data import (
    Split,
    load_or_train_v1,
    load_split,
    retrain,
    state_dir,
    teacher_logits,
    to_events,
)
from bench.sampling_metrics import (
    HEADLINE,
    auc,
    evaluate,
    mean_rows,
    score,
    signal_stats,
    stream_stats,
    summarise,
    sweep_rows,
    teacher_view,
    unsure_stats,
    verdict,
)
from bench.sampling_report import render

if TYPE_CHECKING:
    from distillery.events import SampledPrediction
    from distillery.settings import Settings
    from distillery.task import Task
    from models.student import Student
    from services.sampling import Policy

BUDGETS = (100, 200, 400, 800)
SEEDS = (0, 1, 2, 3)
STREAM_MINUTES = 10.0
SWEEP_BUDGETS = (200, 400)
OFF = 1e6  # a novelty threshold no input reaches


class SimClock:
    """A settable clock for ``TokenBucket``, in seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def targeted(
    events: list[SampledPrediction], policy: Policy, budget: int, minutes: float, seed: int
) -> list[tuple[int, str]]:
    """(stream index, reason) of what the real ``Sampler`` sends to the teacher when the stream
    arrives evenly over ``minutes`` and the bucket refills ``budget / minutes`` labels a minute;
    at most ``budget`` picks."""
    from services.sampling import Sampler, TokenBucket

    clock = SimClock()
    sampler = Sampler(policy, TokenBucket(budget / minutes, clock), 0, rng=random.Random(seed))
    step_s = minutes * 60 / max(len(events), 1)
    picks: list[tuple[int, str]] = []
    for i, event in enumerate(events):
        clock.now = i * step_s
        decision = sampler.decide(event)
        if decision.event is not None:
            picks.append((i, decision.reason))
            if len(picks) == budget:
                break
    return picks


def uniform(n: int, count: int, seed: int) -> list[int]:
    """``count`` stream indices out of ``n``, uniformly without replacement, in stream order."""
    return sorted(random.Random(seed).sample(range(n), count))


@dataclass(frozen=True)
class Context:
    """What every candidate round needs."""

    settings: Settings
    labels: list[str]
    split: Split
    logits: dict[str, np.ndarray]
    v1_dir: Path
    events: list[SampledPrediction]
    v1_wrong: np.ndarray  # (N,) bool: v1's argmax differs from the teacher's on stream request i


def one_run(ctx: Context, strategy: str, budget: int, picks: list[int], seed: int) -> dict:
    """Retrain on the picked stream indices and measure the candidate on both eval sets."""
    stream = ctx.split.stream
    texts = [stream[i].text for i in picks]
    start = time.perf_counter()
    student = retrain(
        ctx.settings, ctx.v1_dir, texts, [r.text for r in ctx.split.seed], ctx.logits, seed
    )
    run = {
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "labels": len(picks),
        "tweet_picks": sum(stream[i].domain == "tweets" for i in picks),
        "v1_wrong_picks": int(ctx.v1_wrong[picks].sum()) if picks else 0,
        "tweets": evaluate(student, ctx.split.eval_tweets, ctx.logits, ctx.labels),
        "movies": evaluate(student, ctx.split.eval_movies, ctx.logits, ctx.labels),
        "seconds": round(time.perf_counter() - start, 1),
    }
    shown = {k: run[k] for k in ("strategy", "budget", "seed", "labels", "seconds")}
    print(json.dumps({**shown, "tweets": run["tweets"]}), flush=True)
    return run


def uniform_run(ctx: Context, cache: dict, budget: int, count: int, seed: int) -> dict:
    """The uniform baseline for ``count`` labels and ``seed``, trained once and reused."""
    if (count, seed) not in cache:
        picks = uniform(len(ctx.events), count, 1_000 + seed)
        cache[count, seed] = one_run(ctx, "uniform", budget, picks, seed)
    return cache[count, seed]


def targeted_run(ctx: Context, name: str, policy: Policy, budget: int, seed: int) -> dict:
    """Retrain on what the real ``Sampler`` picks under ``policy``; records the reasons."""
    picked = targeted(ctx.events, policy, budget, STREAM_MINUTES, seed)
    run = one_run(ctx, name, budget, [i for i, _ in picked], seed)
    run["reasons"] = dict(Counter(reason for _, reason in picked))
    return run


def compare(
    ctx: Context, policy: Policy, budgets: Sequence[int], seeds: Sequence[int], cache: dict
) -> list[dict]:
    """Targeted and uniform runs for every (budget, seed): uniform takes targeted's count."""
    runs = []
    for budget in budgets:
        for seed in seeds:
            run = targeted_run(ctx, "targeted", policy, budget, seed)
            runs += [run, uniform_run(ctx, cache, budget, run["labels"], seed)]
    return runs


def sweep_policies(base: Policy) -> list[tuple[str, Policy | None]]:
    """Variants of ``base`` to find which reason earns its labels; None is the domain oracle
    (uniform over the stream's tweets: what a perfect shift detector could pick at best)."""
    from services.sampling import Policy

    rate, margin_below = base.base_rate, base.margin_below
    return [
        ("margin < 0.1", Policy(rate, 0.1, base.novelty_above)),
        ("margin < 0.3", Policy(rate, 0.3, base.novelty_above)),
        ("margin < 0.5", Policy(rate, 0.5, base.novelty_above)),
        (f"margin < {margin_below:g}, novelty off", Policy(rate, margin_below, OFF)),
        ("novelty > 0.7 only", Policy(rate, 0.0, 0.7)),
        ("tweets only (oracle)", None),
    ]


def sweep(
    ctx: Context, base: Policy, budgets: Sequence[int], seeds: Sequence[int], cache: dict
) -> list[dict]:
    """Each variant at each (budget, seed), paired with the uniform run of the same count."""
    tweets = [i for i, row in enumerate(ctx.split.stream) if row.domain == "tweets"]
    out = []
    for name, policy in sweep_policies(base):
        for budget in budgets:
            for seed in seeds:
                if policy is None:
                    picks = sorted(random.Random(2_000 + seed).sample(tweets, budget))
                    run = one_run(ctx, name, budget, picks, seed)
                else:
                    run = targeted_run(ctx, name, policy, budget, seed)
                run["policy"] = None if policy is None else _policy_dict(policy)
                out += [run, uniform_run(ctx, cache, budget, run["labels"], seed)]
    return out


def sweep_means(runs: list[dict], swept: list[dict], policy: Policy) -> list[dict]:
    """Sweep rows, led by the main policy's own runs at the sweep budgets."""
    if not swept:
        return []
    name = f"default (margin < {policy.margin_below:g}, novelty > {policy.novelty_above:g})"
    main = [
        {**r, "strategy": name if r["strategy"] == "targeted" else r["strategy"]}
        for r in runs
        if r["budget"] in SWEEP_BUDGETS
    ]
    return sweep_rows(main) + sweep_rows(swept)


def _policy_dict(policy: Policy) -> dict[str, float]:
    return {k: getattr(policy, k) for k in ("base_rate", "margin_below", "novelty_above")}


def baselines(ctx: Context, v1: Student) -> dict[str, Any]:
    """v1's and the teacher's scores on both eval sets, how much of v1's disagreement falls
    where the teacher is unsure, and whether v1's novelty tells the eval tweets from movies."""
    out: dict[str, Any] = {"v1": {}, "teacher": {}, "unsure": {}}
    novelty: dict[str, np.ndarray] = {}
    for name, rows in (("tweets", ctx.split.eval_tweets), ("movies", ctx.split.eval_movies)):
        teacher_top, _ = teacher_view(rows, ctx.logits)
        probs, pooled = v1.predict([row.text for row in rows])  # (N, C), (N, H)
        v1_top = probs.argmax(-1)  # (N,)
        out["v1"][name] = score(v1_top, rows, ctx.logits, ctx.labels)
        out["teacher"][name] = score(teacher_top, rows, ctx.logits, ctx.labels)
        out["unsure"][name] = unsure_stats(v1_top, rows, ctx.logits)
        novelty[name] = _novelty(v1, pooled)
    scores = np.concatenate([novelty["tweets"], novelty["movies"]])  # (2N,)
    is_tweet = np.arange(len(scores)) < len(novelty["tweets"])  # (2N,)
    out["eval_novelty_auc_tweet_vs_movie"] = round(auc(scores, is_tweet), 3)
    return out


def _novelty(v1: Student, pooled: np.ndarray) -> np.ndarray:
    """v1's novelty scores for pooled (N, H) → (N,); raises if v1 has no reference."""
    novelty = v1.novelty(pooled)
    if novelty is None:
        raise RuntimeError("v1 has no novelty reference")
    return novelty


def assemble(
    ctx: Context, v1: Student, runs: list[dict], policy: Policy, args: Any
) -> dict[str, Any]:
    """The payload: sizes, v1 and teacher numbers, runs, means, summary, verdict."""
    split = ctx.split
    base = baselines(ctx, v1)
    summary = summarise(runs, base["v1"]["tweets"][HEADLINE])
    sizes = {
        "seed": len(split.seed),
        "eval_movies": len(split.eval_movies),
        "eval_tweets": len(split.eval_tweets),
        "stream": len(split.stream),
        "stream_tweets": sum(r.domain == "tweets" for r in split.stream),
    }
    return {
        "policy": _policy_dict(policy),
        "budgets": list(args.budgets),
        "seeds": list(args.seeds),
        "threads": args.threads,
        "teacher_name": args.teacher,
        "stream_minutes": STREAM_MINUTES,
        "headline": HEADLINE,
        "sizes": sizes,
        **base,
        "runs": runs,
        "means": mean_rows(runs),
        "summary": summary,
        "verdict": verdict(summary),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the JSON payload."""
    import torch

    from distillery.settings import Settings
    from distillery.task import load_task
    from services.sampling import Policy

    torch.set_num_threads(args.threads)
    settings = Settings()
    task = load_task(settings.paths.task_file)
    split = load_split(settings.paths.data_dir, args.seed_size, args.eval_size, args.stream, 0.4)
    state = state_dir(args.teacher)
    logits = _teacher_logits(args, split, settings, task, state)
    v1 = load_or_train_v1(settings, task, split, logits, state / "v1")
    probs, pooled = v1.predict([row.text for row in split.stream])  # (N, C), (N, H)
    novelty = _novelty(v1, pooled)  # (N,)
    teacher_top, _ = teacher_view(split.stream, logits)  # (N,)
    v1_wrong = probs.argmax(-1) != teacher_top  # (N,)
    policy = Policy(args.base_rate, args.margin_below, args.novelty_above)
    events = to_events(split.stream, probs, novelty)
    ctx = Context(settings, task.label_names, split, logits, state / "v1", events, v1_wrong)
    cache: dict = {}
    runs = compare(ctx, policy, args.budgets, args.seeds, cache)
    swept = [] if args.no_sweep else sweep(ctx, policy, SWEEP_BUDGETS, args.seeds, cache)
    result = assemble(ctx, v1, runs, policy, args)
    result["stream"] = stream_stats(split, probs, novelty, policy)
    result["signals"] = signal_stats(split, probs, novelty, v1_wrong, policy)
    result["sweep"] = swept
    result["sweep_means"] = sweep_means(runs, swept, policy)
    return result


def _teacher_logits(
    args: argparse.Namespace, split: Split, settings: Settings, task: Task, state: Path
) -> dict[str, np.ndarray]:
    """Every text's teacher logits: MiniLM's, or the local LLM's through its real llama.cpp
    server on ``--threads`` threads (started only for this pass)."""
    cache = state / "teacher.npz"
    if args.teacher == "minilm":
        return teacher_logits(split.texts(), cache, settings, task)
    from bench.labeler import llm_teacher_settings
    from bench.offline_students import local_llm
    from models.factory import llm_teacher

    with local_llm(args.threads, state) as server:
        llm = llm_teacher(llm_teacher_settings(server.url, args.threads), task)
        try:
            return teacher_logits(split.texts(), cache, settings, task, llm)
        finally:
            llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--base-rate", type=float, default=0.02)
    parser.add_argument("--margin-below", type=float, default=0.2)
    parser.add_argument("--novelty-above", type=float, default=1.0)
    parser.add_argument("--seed-size", type=int, default=1_600)
    parser.add_argument("--eval-size", type=int, default=800)
    parser.add_argument("--stream", type=int, default=3_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sweep", action="store_true", help="skip the policy sweep")
    parser.add_argument("--name", default="sampling")
    parser.add_argument("--teacher", choices=["minilm", "llm"], default="minilm",
                        help="llm: the local LLM labels every text (1.7 texts/s here)")  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    result = run(args)
    result["seconds"] = round(time.perf_counter() - start, 1)
    report = render(result)
    json_path, _ = write_results(args.name, result, report)
    print(report)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
