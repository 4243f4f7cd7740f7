"""Generative distillation, offline: does SmolLM2-135M learn the teacher LLM's replies, and how
fast does it catch up after a shift? (``make bench-generate``)

The task is ``tasks/reply.yaml``: a one-sentence reply to a real customer message. Phase 1 is
VADER's product reviews, phase 2 its tweets (the shift). The teacher is Qwen2.5-Coder-0.5B-Instruct
through the real llama.cpp server (greedy, one thread); its replies are kept in the loop's own
label cache (``models.label_cache.CachedResponder``, ``state/bench-generate``) by teacher id and
chat, so a rerun pays only for new prompts.

1. Speeds, in a quiet phase, one thread each: the teacher's completion tokens/s and p50 time to
   first token (streamed over HTTP), and the student's in process, on both of its runtimes:
   transformers (``models.generator``, what trains and gates) and llama.cpp on the exported
   Q8_0 GGUF (``models.llama_decoder``, what the Serve app decodes with by default). The goal
   is judged on the served runtime. ``--speed-only`` stops here (``generate-speed.*``).
2. Similarity to the teacher on held-out prompts of each phase (mean sentence chrF,
   ``training.chrf``, and the teacher replies' mean per-token log-likelihood under the
   student), for the never-retrained student, after round 1 (SFT on ``--train`` reviews
   answers, ``training.sft``), and after each step of round 2 on tweets answers (the
   cumulative counts in ``--shift-steps``, each replayed with as many review answers).

Writes ``bench/results/generate.{json,md,png}``. Offline: the same fine-tuning and measures as
the live loop's round (``training.generate_round``), without Kafka, Ray or Serve around them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.harness import ROOT, markdown_table, write_results
from distillery import vader
from distillery.events import ChatTurn
from distillery.settings import TeacherSettings
from distillery.task import Generate, load_task
from models.factory import llm_responder
from models.generator import Generator, chat
from models.label_cache import CachedResponder, LabelCache
from training.chrf import mean_chrf
from training.sft import fine_tune, reply_token_logps, sft_batch

STATE = ROOT / "state" / "bench-generate"
TASK = ROOT / "tasks" / "reply.yaml"
PHASES = ("amazon", "tweets")
SPEEDUP_GOAL, RECOVERY_GOAL = 10.0, 1_000


def split(domain: str, n_train: int, n_eval: int) -> tuple[list[str], list[str]]:
    """Held-out texts from the end of the domain, training texts from its start."""
    rows = [r.text for r in vader.load(domain, ROOT / "data") if 3 <= len(r.text.split()) <= 60]
    return rows[:n_train], rows[-n_eval:]


def teacher_speed(url: str, model: str, gen: Generate, prompts: list[str]) -> dict[str, float]:
    """Streamed chat completions one at a time: completion tokens/s and time to first token."""
    with httpx.Client(timeout=120) as http:
        streams = [stream_teacher(http, url, model, gen, prompt) for prompt in prompts]
    tokens, seconds = sum(s.tokens for s in streams), sum(s.seconds for s in streams)
    return {
        "tokens_per_s": round(tokens / seconds, 2),
        "ttft_p50_s": _p50([s.ttft for s in streams]),
    }


@dataclass(frozen=True)
class Streamed:
    """One streamed reply from the teacher's server, timed from the request."""

    text: str
    tokens: int  # content chunks: one per token on llama.cpp's server
    ttft: float
    seconds: float


def stream_teacher(
    http: httpx.Client, url: str, model: str, gen: Generate, prompt: str
) -> Streamed:
    """The teacher's greedy reply to ``prompt`` in ``gen``'s chat, streamed."""
    body = {
        "model": model, "stream": True, "temperature": 0,
        "max_tokens": gen.max_new_tokens, "stop": list(gen.stop),
        "messages": [{"role": "system", "content": gen.system_prompt},
                     {"role": "user", "content": prompt}],
    }  # fmt: skip
    start, first, pieces = time.perf_counter(), None, []
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0].get("delta", {})
            if delta.get("content"):
                first = first or time.perf_counter() - start
                pieces.append(delta["content"])
    seconds = time.perf_counter() - start
    return Streamed("".join(pieces), len(pieces), first or seconds, seconds)


def student_speed(student: Generator, gen: Generate, prompts: list[str]) -> dict[str, float]:
    replies = [student.reply(chat(gen.system_prompt, p), gen.max_new_tokens, gen.stop)
               for p in prompts]  # fmt: skip
    tokens = sum(r.completion_tokens for r in replies)
    return {
        "tokens_per_s": round(tokens / sum(r.seconds for r in replies), 2),
        "ttft_p50_s": _p50([r.first_token_s for r in replies]),
    }


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def similarity(student: Generator, gen: Generate, prompts: list[str], refs: list[str]) -> dict:
    """Mean chrF of the student's replies against the teacher's, and the teacher replies' mean
    per-token log-likelihood under the student."""
    chats = [chat(gen.system_prompt, p) for p in prompts]
    made = [student.reply(c, gen.max_new_tokens, gen.stop).text for c in chats]
    batch = sft_batch(student, chats, refs)
    per_token = reply_token_logps(student, batch)
    return {"chrf": round(mean_chrf(made, refs), 2), "logp": round(float(per_token.mean()), 3)}


def measure(student: Generator, gen: Generate, evals: dict[str, tuple[list, list]]) -> dict:
    return {d: similarity(student, gen, p, r) for d, (p, r) in evals.items()}


def teacher_data(args: argparse.Namespace, gen: Generate, say: Any) -> dict[str, Any]:
    """Every phase's training and held-out prompts with the teacher's replies, and its speed."""
    from models.gguf import local_gguf
    from services.llm_server import LocalLLM

    STATE.mkdir(parents=True, exist_ok=True)
    sizes = {"amazon": args.train, "tweets": max(args.shift_steps)}
    out: dict[str, Any] = {}
    with LocalLLM(local_gguf(ROOT / "data"), 1, log_path=STATE / "llm-server.log") as server:
        settings = TeacherSettings(kind="llm", url=server.url, concurrency=1, timeout_s=120)
        responder = llm_responder(settings, load_task(TASK))
        teacher = CachedResponder(responder, LabelCache(STATE / "teacher-cache.sqlite"))
        try:
            for domain in () if args.speed_only else PHASES:
                say(f"{domain}: teacher replies")
                train, held = split(domain, sizes[domain], args.eval)
                out[domain] = {k: answered([gen.prompt(t) for t in texts], gen, teacher, say)
                               for k, texts in (("train", train), ("eval", held))}  # fmt: skip
            speed_prompts = [gen.prompt(t) for t in split("amazon", 0, args.speed)[1]]
            out["teacher_speed"] = teacher_speed(server.url, responder.client.model, gen,
                                                 speed_prompts)  # fmt: skip
            out["speed_prompts"], out["teacher_id"] = speed_prompts, teacher.teacher_id
        finally:
            teacher.close()
    return out


def answered(prompts: list[str], gen: Generate, teacher: CachedResponder, say: Any) -> tuple:
    """(prompts, replies) of the prompts the teacher answered, 16 chats a call."""
    replies: list[str | None] = []
    for start in range(0, len(prompts), 16):
        batch = teacher.respond([chat(gen.system_prompt, p) for p in prompts[start : start + 16]])
        replies += [None if r is None else r.text for r in batch.responses]
        say(f"  teacher: {len(replies)}/{len(prompts)} ({batch.cost.cache_hits} from the cache)")
    kept = [(p, r) for p, r in zip(prompts, replies, strict=True) if r]
    return [p for p, _ in kept], [r for _, r in kept]


def rounds(args: argparse.Namespace, gen: Generate, data: dict[str, Any], say: Any) -> list:
    """The never-retrained student, round 1 on reviews, then round 2's steps on tweets."""
    from models.gguf import student_gguf

    torch.manual_seed(args.seed)
    student = Generator.from_gguf(student_gguf(ROOT / "data"))
    evals = {d: data[d]["eval"] for d in PHASES}
    rows = [{"stage": "never retrained", "tweets_answers": 0, **measure(student, gen, evals)}]
    say(f"  {rows[-1]}")
    reviews_p, reviews_r = data["amazon"]["train"]
    _train(student, gen, reviews_p, reviews_r, args)
    rows.append({"stage": "round 1: reviews", "tweets_answers": 0, **measure(student, gen, evals)})
    say(f"  {rows[-1]}")
    tweets_p, tweets_r = data["tweets"]["train"]
    done = 0
    for step in args.shift_steps:
        new_p, new_r = tweets_p[done:step], tweets_r[done:step]
        replay = slice(0, len(new_p))  # as many review answers, replayed
        _train(student, gen, new_p + reviews_p[replay], new_r + reviews_r[replay], args)
        done = step
        stage = {"stage": f"round 2: +{len(new_p)} tweets answers", "tweets_answers": done}
        rows.append({**stage, **measure(student, gen, evals)})
        say(f"  {rows[-1]}")
    return rows


def _train(student: Generator, gen: Generate, prompts: list, replies: list, args: Any) -> None:
    chats: list[list[ChatTurn]] = [chat(gen.system_prompt, p) for p in prompts]
    torch.set_num_threads(args.train_threads)
    try:
        fine_tune(student, chats, replies, epochs=args.epochs, lr=args.lr, seed=args.seed)
    finally:
        torch.set_num_threads(1)


def speedup(speeds: dict[str, dict]) -> dict[str, Any]:
    """The served student's tokens/s over the teacher's, one stream and one thread each."""
    ratio = speeds["student"]["tokens_per_s"] / speeds["teacher"]["tokens_per_s"]
    return {"value": round(ratio, 2), "goal": SPEEDUP_GOAL, "met": ratio >= SPEEDUP_GOAL}


def verdict(rows: list[dict], speeds: dict[str, dict]) -> dict[str, Any]:
    return {"speedup": speedup(speeds), "recovery": recovery(rows)}


def recovery(rows: list[dict]) -> dict[str, Any]:
    """Tweets back at phase 1's level (reviews chrF after round 1) within the goal's answers
    (``bench.generate_loop`` too)."""
    level = rows[1]["amazon"]["chrf"]  # phase 1's level, after its round
    recovered = [r["tweets_answers"] for r in rows[2:] if r["tweets"]["chrf"] >= level]
    return {
        "phase1_chrf": level,
        "answers": recovered[0] if recovered else None,
        "goal": RECOVERY_GOAL,
        "met": bool(recovered) and recovered[0] <= RECOVERY_GOAL,
    }


def student_speeds(gen: Generate, prompts: list[str]) -> dict[str, dict[str, float]]:
    """The never-retrained student on each runtime, the served one under ``student``."""
    from models.llama_decoder import served_generator

    with exported_base() as (folder, torch_student):
        served = served_generator(folder, "llama.cpp", 1, ROOT / "data")
        out = {"student": student_speed(served, gen, prompts)}
    out["student (transformers)"] = student_speed(torch_student, gen, prompts)
    return out


@contextmanager
def exported_base() -> Iterator[tuple[Path, Generator]]:
    """The never-retrained student saved as a version folder, with its Q8_0 ``student.gguf``
    (what the Serve app decodes), and the transformers model itself."""
    from models.gguf import student_gguf
    from models.gguf_export import GGUF_FILE, export

    base = student_gguf(ROOT / "data")
    torch_student = Generator.from_gguf(base)
    with tempfile.TemporaryDirectory() as tmp:
        torch_student.save(Path(tmp))
        export(torch_student.model, base, Path(tmp) / GGUF_FILE)
        yield Path(tmp), torch_student


def run(args: argparse.Namespace, say: Any = print) -> dict[str, Any]:
    gen = load_task(TASK).generate
    assert gen is not None
    torch.set_num_threads(1)
    data = teacher_data(args, gen, say)
    speeds = {"teacher": data["teacher_speed"], **student_speeds(gen, data["speed_prompts"])}
    say(f"speeds: {speeds}")
    if args.speed_only:
        return {"teacher_id": data["teacher_id"], "speeds": speeds,
                "goals": {"speedup": speedup(speeds)}, "settings": vars(args)}  # fmt: skip
    rows = rounds(args, gen, data, say)
    sizes = {d: {k: len(data[d][k][0]) for k in ("train", "eval")} for d in PHASES}
    return {"teacher_id": data["teacher_id"], "sizes": sizes, "speeds": speeds, "rows": rows,
            "goals": verdict(rows, speeds), "settings": vars(args)}  # fmt: skip


def speed_table(result: dict[str, Any]) -> str:
    sp, goal = result["speeds"], result["goals"]["speedup"]
    names = {"student": "student (llama.cpp, Q8_0: served)"}
    speed_rows = [[names.get(who, who), sp[who]["tokens_per_s"], sp[who]["ttft_p50_s"]]
                  for who in sp]  # fmt: skip
    head = markdown_table(["one thread, one stream", "tokens/s", "p50 time to first token (s)"],
                          speed_rows)  # fmt: skip
    return head + (
        f"\n\n- the served student's tokens/s is {goal['value']}× the teacher's, one stream "
        f"each (goal ≥ {SPEEDUP_GOAL:g}×: {'met' if goal['met'] else 'not met'}).\n"
    )


def table(result: dict[str, Any]) -> str:
    if "rows" not in result:  # --speed-only
        return f"Teacher `{result['teacher_id']}`.\n\n" + speed_table(result)
    goals = result["goals"]
    rows = [[r["stage"], r["tweets_answers"], r["amazon"]["chrf"], r["amazon"]["logp"],
             r["tweets"]["chrf"], r["tweets"]["logp"]] for r in result["rows"]]  # fmt: skip
    header = ["student", "tweets answers", "reviews chrF", "reviews log-lik/token",
              "tweets chrF", "tweets log-lik/token"]  # fmt: skip
    rec = goals["recovery"]
    lines = [
        f"- tweets chrF reaches phase 1's level ({rec['phase1_chrf']}) after "
        f"{rec['answers'] if rec['answers'] is not None else 'more than the last step of'} tweets "
        f"answers (goal ≤ {RECOVERY_GOAL}: {'met' if rec['met'] else 'not met'}).",
    ]
    sizes = result["sizes"]
    intro = (f"Teacher `{result['teacher_id']}`; held-out prompts: reviews "
             f"{sizes['amazon']['eval']}, tweets {sizes['tweets']['eval']}; round 1 on "
             f"{sizes['amazon']['train']} review answers.\n\n")  # fmt: skip
    body = markdown_table(header, rows) + "\n\n" + "\n".join(lines) + "\n"
    return intro + speed_table(result) + "\n" + body


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(8, 4))
    for domain, label in (("amazon", "reviews (phase 1)"), ("tweets", "tweets (phase 2)")):
        ax.plot(x, [r[domain]["chrf"] for r in rows], marker="o", label=label)
        ax.axhline(rows[0][domain]["chrf"], linestyle=":", linewidth=1, color="grey")
    ax.set_xticks(x, [r["stage"].replace(": ", ":\n") for r in rows], fontsize=7)
    ax.set_ylabel("chrF against the teacher's reply")
    ax.set_title("SmolLM2-135M learning Qwen2.5-0.5B's replies (dotted: never retrained)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=160, help="review answers for round 1")
    parser.add_argument("--shift-steps", type=int, nargs="+", default=[40, 80, 160])
    parser.add_argument("--eval", type=int, default=30, help="held-out prompts per phase")
    parser.add_argument("--speed", type=int, default=10, help="prompts for the speed phase")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-only", action="store_true", help="the speeds, no rounds")
    args = parser.parse_args()
    result = run(args)
    name = "generate-speed" if args.speed_only else "generate"
    json_path, md_path = write_results(name, result, table(result))
    if not args.speed_only:
        plot(result, json_path.with_suffix(".png"))
    print(table(result))
    print(f"wrote {json_path} and {md_path}" + ("" if args.speed_only else " and the .png"))


if __name__ == "__main__":
    main()
