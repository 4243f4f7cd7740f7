"""Served tokens/s under concurrent chats: the student decoding its open replies together
(``models.batch_decoder``) against the teacher's llama.cpp server under the same load
(``make bench-generate-batch``).

``bench.generate``'s speed table times one stream at a time; a server is judged by what it
serves when several chats are open. Here ``--prompts`` review prompts of ``tasks/reply.yaml``
(VADER's amazon texts) are answered by ``c`` concurrent clients, one thread of compute each:

- **teacher**: Qwen2.5-Coder-0.5B-Instruct through its real llama.cpp server
  (``services.llm_server``), streamed over HTTP; the server takes one request at a time;
- **teacher, batched in process**: the same GGUF on the same ``BatchDecoder`` the student
  uses, which is what the teacher would give behind a batching server (not how it is served
  here, so not the goal's baseline, but the like-for-like ratio of the two models);
- **student**: the never-retrained SmolLM2-135M exported to Q8_0, decoded as the Serve app
  decodes it, with ``DISTILLERY_SERVE_GENERATE_STREAMS`` = ``c`` (``c`` 1: ``LlamaDecoder``,
  one reply at a time).

Aggregate tokens/s is the completion tokens of all replies over the wall time from the first
request to the last reply, the prompts' evaluation included; per-stream p50 time to first
token and tokens/s beside it. Replies decoded together can differ from one-at-a-time replies
(floating-point sums in another order: a batched server's replies are not batch-invariant),
so each student row also gives its mean chrF against the teacher's replies and against the
one-at-a-time student's. Writes ``bench/results/generate_batch.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import torch

from bench.generate import STATE, TASK, exported_base, split, stream_teacher
from bench.harness import ROOT, markdown_table, publish
from distillery.task import Generate, load_task
from models.batch_decoder import BatchDecoder
from models.generator import Generator, Reply, chat
from models.gguf import local_gguf
from models.llama_decoder import served_generator
from training.chrf import mean_chrf

GOAL = 10.0
Answer = tuple[str, int, float, float]  # text, completion tokens, time to first token, seconds


def load(prompts: Sequence[str], clients: int, answer: Callable[[str], Answer]) -> dict[str, Any]:
    """``prompts`` answered by ``clients`` concurrent callers of ``answer``."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(answer, prompts))
    wall = time.perf_counter() - start
    tokens = sum(a[1] for a in answers)
    return {
        "clients": clients,
        "tokens_per_s": round(tokens / wall, 2),
        "stream_tokens_per_s_p50": _p50([a[1] / a[3] for a in answers]),
        "ttft_p50_s": _p50([a[2] for a in answers]),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "replies": [a[0] for a in answers],
    }


def _p50(values: list[float]) -> float:
    return round(sorted(values)[len(values) // 2], 3)


def in_process(generator: Generator, gen: Generate) -> Callable[[str], Answer]:
    def answer(prompt: str) -> Answer:
        r: Reply = generator.reply(chat(gen.system_prompt, prompt), gen.max_new_tokens, gen.stop)
        return r.text, r.completion_tokens, r.first_token_s, r.seconds

    return answer


def teacher_rows(gen: Generate, prompts: list[str], clients: list[int], say: Any) -> list[dict]:
    from services.llm_server import LocalLLM

    STATE.mkdir(parents=True, exist_ok=True)
    rows = []
    with (
        LocalLLM(local_gguf(ROOT / "data"), 1, log_path=STATE / "llm-server.log") as server,
        httpx.Client(timeout=600) as http,
    ):
        model = http.get(f"{server.url}/v1/models").json()["data"][0]["id"]

        def answer(prompt: str) -> Answer:
            s = stream_teacher(http, server.url, model, gen, prompt)
            return s.text, s.tokens, s.ttft, s.seconds

        for c in clients:
            say(f"teacher's server, {c} clients")
            rows.append({"who": "teacher (its llama.cpp server)", **load(prompts, c, answer)})
    return rows


def batched_teacher_row(gen: Generate, prompts: list[str], clients: int, say: Any) -> dict:
    from transformers import AutoTokenizer

    say(f"teacher batched in process, {clients} streams")
    path = local_gguf(ROOT / "data")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    teacher = Generator(None, tokenizer, BatchDecoder(path, 1, clients))
    teacher.reply(chat("", "warm up"), 2)
    row = load(prompts, clients, in_process(teacher, gen))
    return {"who": "teacher, batched in process (not as served)", **row}


def student_rows(gen: Generate, prompts: list[str], streams: list[int], say: Any) -> list[dict]:
    rows = []
    with exported_base() as (folder, _):
        for c in streams:
            say(f"student, {c} streams")
            student = served_generator(folder, "llama.cpp", 1, ROOT / "data", c)
            student.reply(chat("", "warm up"), 2)
            rows.append({"who": "student (served)", "streams": c,
                         **load(prompts, c, in_process(student, gen))})  # fmt: skip
    return rows


def run(args: argparse.Namespace, say: Any = print) -> dict[str, Any]:
    gen = load_task(TASK).generate
    assert gen is not None
    torch.set_num_threads(1)
    prompts = [gen.prompt(t) for t in split("amazon", 0, args.prompts)[1]]
    teacher = teacher_rows(gen, prompts, sorted({1, args.clients}), say)
    students = student_rows(gen, prompts, args.streams, say)
    batched = batched_teacher_row(gen, prompts, args.clients, say)
    refs, alone = teacher[0]["replies"], students[0]["replies"]
    for row in [*teacher, batched, *students]:
        replies = row.pop("replies")
        row["chrf_vs_teacher"] = round(mean_chrf(replies, refs), 2)
        if "streams" in row:
            row["chrf_vs_one_at_a_time"] = round(mean_chrf(replies, alone), 2)
    return {"rows": [*teacher, batched, *students], "goal": verdict(teacher, students, args),
            "settings": vars(args)}  # fmt: skip


def verdict(teacher: list[dict], students: list[dict], args: argparse.Namespace) -> dict:
    """The served student's tokens/s over the teacher server's, both under ``--clients``."""
    base = next(r for r in teacher if r["clients"] == args.clients)["tokens_per_s"]
    best = next((r for r in students if r["streams"] == args.clients), students[-1])
    ratio = best["tokens_per_s"] / base
    return {"clients": args.clients, "value": round(ratio, 2), "goal": GOAL, "met": ratio >= GOAL}


def table(result: dict[str, Any]) -> str:
    header = ["who", "concurrent chats", "tokens/s, all chats", "p50 tokens/s, one chat",
              "p50 time to first token (s)", "chrF vs the teacher",
              "chrF vs one at a time"]  # fmt: skip
    rows = [[r["who"], r.get("streams", r.get("clients")), r["tokens_per_s"],
             r["stream_tokens_per_s_p50"], r["ttft_p50_s"], r["chrf_vs_teacher"],
             r.get("chrf_vs_one_at_a_time", "—")] for r in result["rows"]]  # fmt: skip
    cfg, goal = result["settings"], result["goal"]
    head = (
        f"{cfg['prompts']} review prompts of `tasks/reply.yaml`, greedy, one thread of compute "
        f"each; the student's streams = its concurrent chats.\n\n"
    )
    met = "met" if goal["met"] else "not met"
    tail = (
        f"\n- the served student's tokens/s is {goal['value']:g}× the teacher server's, both "
        f"under {goal['clients']} concurrent chats (goal ≥ {goal['goal']:g}×: {met}).\n"
    )
    return head + markdown_table(header, rows) + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32, help="review prompts, answered once")
    parser.add_argument("--clients", type=int, default=8, help="concurrent chats for the goal")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    if args.streams[0] != 1:
        parser.error(f"--streams must start at 1 (one at a time), not {args.streams[0]}")
    result = run(args)
    publish("generate_batch", result, table(result))


if __name__ == "__main__":
    main()
