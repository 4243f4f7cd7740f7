"""Generative distillation through the live loop (``make bench-generate-loop``; issue 19: "A
benchmark (JSON + table + plot) through the live loop").

``bench.generate`` fine-tunes in process; this one runs what ``distillery up`` runs for
``tasks/reply.yaml``, with a state of its own: SmolLM2-135M v1 on Ray Serve, chats sampled at
rate 1 into the real broker, the local LLM answering them through the labeler, rounds on Ray
Train from the example store, the gate, and a version swapped in by ``reconfigure``. Rounds are
asked for as an operator would (``scheduler.retrain``), the rollout off, so a version the gate
passes serves at once and one it rejects is reported so.

1. The teacher's replies to the held-out prompts of each phase (the last ``--eval`` reviews
   and tweets), from its own llama.cpp server, kept in ``bench.generate``'s cache
   (``state/bench-generate``, which also warms the loop's label cache: a prompt answered once
   costs no second request in either).
2. Each stage sends every held-out prompt to ``POST /v1/chat/completions`` (8 at a time,
   greedy, ``allow_training: false``, so none is sampled) and scores the served replies: mean
   chrF against the teacher's (``training.chrf``), and the served tokens/s over the batch.
3. Stages: never retrained; phase 1, ``--reviews`` review chats sent, labelled by the teacher
   through the loop, then a round; phase 2 (the shift), tweets chats in the cumulative counts
   of ``--tweets-steps``, each followed by a round.

Writes ``bench/results/generate_loop.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.generate import STATE, TASK, plot, recovery, split
from bench.generate_dpo import teacher_replies
from bench.harness import ROOT, markdown_table, publish
from distillery.settings import (
    PathSettings,
    RolloutSettings,
    SchedulerSettings,
    ServeSettings,
    Settings,
    TeacherSettings,
)
from distillery.task import Generate, load_task
from training.chrf import mean_chrf

LOOP_STATE = ROOT / "state" / "bench-generate-loop"
CACHE = "teacher-cache.sqlite"


def loop_settings() -> Settings:
    from services.broker import free_port

    return Settings(
        paths=PathSettings(state_dir=LOOP_STATE, data_dir=ROOT / "data", task_file=TASK),
        serve=ServeSettings(
            port=free_port(),
            metrics_export_port=free_port(),
            sample_rate=1.0,
            request_timeout_s=120,
        ),
        teacher=TeacherSettings(batch_wait_s=0.2, budget_per_min=6_000),  # kind: set by `up`
        scheduler=SchedulerSettings(enabled=False, drift_every_s=86_400),
        rollout=RolloutSettings(enabled=False),
    )


def ask(url: str, gen: Generate, prompts: list[str], train: bool) -> dict[str, Any]:
    """Every prompt to the Serve app, 8 at a time: the replies, versions and tokens/s."""

    def one(prompt: str) -> dict[str, Any]:
        body = {"messages": [{"role": "user", "content": prompt}],
                "max_tokens": gen.max_new_tokens, "allow_training": train}  # fmt: skip
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
        response.raise_for_status()
        return dict(response.json())

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, prompts))
    tokens = sum(a["usage"]["completion_tokens"] for a in answers)
    return {
        "replies": [a["choices"][0]["message"]["content"] for a in answers],
        "versions": sorted({a["model_version"] for a in answers}),
        "tokens_per_s": round(tokens / (time.perf_counter() - start), 2),
    }


def labelled(store_dir: Path, n: int, timeout_s: float = 1_800) -> None:
    """Until the store holds ``n`` teacher replies."""
    from feedback.examples import read_labels

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        labels = read_labels(store_dir)
        if "reply" in labels and int(labels["reply"].notna().sum()) >= n:
            return
        time.sleep(2)
    raise TimeoutError(f"fewer than {n} teacher replies in the store after {timeout_s:g}s")


def stage(url: str, gen: Generate, evals: dict[str, tuple], name: str, answers: int) -> dict:
    row: dict[str, Any] = {"stage": name, "tweets_answers": answers}
    for domain, (prompts, refs) in evals.items():
        got = ask(url, gen, prompts, train=False)
        row[domain] = {"chrf": round(mean_chrf(got["replies"], refs), 2),
                       "tokens_per_s": got["tokens_per_s"]}  # fmt: skip
        row["versions"] = got["versions"]
    return row


def round_row(running: Any, reason: str, timeout_s: float = 300) -> dict[str, Any]:
    """A round, and once its version is promoted, every replica serving it."""
    import ray

    report = ray.get(running.scheduler.retrain.remote(reason))
    deadline = time.monotonic() + timeout_s
    while report.outcome == "promoted" and time.monotonic() < deadline:
        replicas = ray.get(running.scheduler.status.remote()).replicas
        if replicas and set(replicas.values()) == {report.version}:
            break
        time.sleep(1)
    return {"outcome": report.outcome, "version": report.version,
            "round_s": round(report.seconds, 1), "gate": report.reason}  # fmt: skip


def run(args: argparse.Namespace, say: Any = print) -> dict[str, Any]:
    from cli.launcher import up

    gen = load_task(TASK).generate
    assert gen is not None
    reviews, reviews_held = split("amazon", args.reviews, args.eval)
    tweets, tweets_held = split("tweets", max(args.tweets_steps), args.eval)
    held = {"amazon": [gen.prompt(t) for t in reviews_held],
            "tweets": [gen.prompt(t) for t in tweets_held]}  # fmt: skip
    evals = teacher_replies(held, gen, say)
    shutil.rmtree(LOOP_STATE, ignore_errors=True)
    LOOP_STATE.mkdir(parents=True)
    shutil.copy(STATE / CACHE, LOOP_STATE / CACHE)  # the replies bench.generate paid for
    running = up(loop_settings(), say=lambda _: None)
    store = running.settings.paths.store_dir
    rows = []
    try:
        rows.append(stage(running.api_url, gen, evals, "never retrained", 0))
        say(f"  {rows[-1]}")
        ask(running.api_url, gen, [gen.prompt(t) for t in reviews], train=True)
        labelled(store, len(reviews))
        done = round_row(running, f"bench: {len(reviews)} reviews answers")
        rows.append({**stage(running.api_url, gen, evals, "round 1: reviews", 0), **done})
        say(f"  {rows[-1]}")
        sent = 0
        for step in args.tweets_steps:
            ask(running.api_url, gen, [gen.prompt(t) for t in tweets[sent:step]], train=True)
            labelled(store, len(reviews) + step)
            done = round_row(running, f"bench: +{step - sent} tweets answers")
            name = f"round {len(rows)}: +{step - sent} tweets answers"
            rows.append({**stage(running.api_url, gen, evals, name, step), **done})
            say(f"  {rows[-1]}")
            sent = step
    finally:
        running.stop()
        shutil.copy(LOOP_STATE / CACHE, STATE / CACHE)  # what the loop's teacher answered
    return {"rows": rows, "goals": recovery(rows), "settings": vars(args),
            "sizes": {"reviews": len(reviews), "eval": args.eval}}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    header = ["stage", "serving", "tweets answers", "reviews chrF", "tweets chrF",
              "served tokens/s", "round (s)", "round outcome"]  # fmt: skip
    rows = [[r["stage"], ", ".join(f"v{v}" for v in r["versions"]), r["tweets_answers"],
             r["amazon"]["chrf"], r["tweets"]["chrf"], r["tweets"]["tokens_per_s"],
             r.get("round_s", "—"), r.get("outcome", "—")]
            for r in result["rows"]]  # fmt: skip
    s, goal = result["sizes"], result["goals"]
    head = (
        f"Through `distillery up` on `tasks/reply.yaml`: {s['reviews']} review chats, then "
        f"tweets; {s['eval']} held-out prompts per phase, 8 at a time, greedy.\n\n"
    )
    answers = goal["answers"] if goal["answers"] is not None else "not within the run"
    met = "met" if goal["met"] else "not met"
    tail = (
        f"\n- tweets chrF back at phase 1's level ({goal['phase1_chrf']}) after {answers} "
        f"tweets answers (goal ≤ {goal['goal']}: {met}).\n"
    )
    return head + markdown_table(header, rows) + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reviews", type=int, default=160, help="review chats for round 1")
    parser.add_argument("--tweets-steps", type=int, nargs="+", default=[40])
    parser.add_argument("--eval", type=int, default=30, help="held-out prompts per phase")
    args = parser.parse_args()
    result = run(args)
    publish("generate_loop", result, table(result))
    plot(result, ROOT / "bench" / "results" / "generate_loop.png")


if __name__ == "__main__":
    main()
