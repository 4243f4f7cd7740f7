"""Does a DPO term on rated-bad replies help a generate round? (``make bench-generate-dpo``;
issue 19: "Rounds may add a DPO term … Show with figures whether it helps.")

The task is ``tasks/reply.yaml`` over VADER's product reviews, as in ``bench.generate``; the
teacher is the local LLM through its real llama.cpp server (replies cached with
``bench.generate``'s, ``state/bench-generate``). Offline, the round's own functions
(``training.sft.fine_tune``, ``training.sft.Preference``), without Kafka, Ray or Serve:

1. The never-retrained student (SmolLM2-135M, as served: llama.cpp on its Q8_0 export) replies
   to the ``--train`` training prompts. A simulated person rates a reply bad (1) when its chrF
   against the teacher's reply is below ``--bad-below``, else good (5): people are assumed to
   prefer what the teacher says, the only judge this benchmark has without people.
2. From the same starting weights and seed, one round per arm, on the teacher's replies to
   every training prompt (what the loop's round trains on): SFT alone
   (``TRAIN_DPO_WEIGHT=0``), and SFT plus DPO at each ``--dpo-weights`` on the pairs (the
   teacher's reply chosen, the student's rated-bad reply rejected; ``generate_cycle``'s pairs
   without a correction).
3. Each arm on ``--eval`` held-out prompts, decoded as served: mean chrF against the teacher's
   replies (what the gate measures), the share a person would rate bad (chrF below
   ``--bad-below``), and the teacher replies' per-token log-likelihood.

Writes ``bench/results/generate_dpo.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.generate import STATE, TASK, answered, split
from bench.harness import ROOT, markdown_table, publish
from distillery.settings import TeacherSettings
from distillery.task import Generate, load_task
from models.factory import llm_responder
from models.generator import Generator, chat
from models.gguf import local_gguf, student_gguf
from models.label_cache import CachedResponder, LabelCache
from models.llama_decoder import on_runtime
from training.chrf import chrf
from training.sft import Pairs, Preference, fine_tune, reply_token_logps, sft_batch


def teacher_replies(prompts: dict[str, list[str]], gen: Generate, say: Any) -> dict[str, tuple]:
    """(prompts, replies) per split, of the prompts the teacher answered."""
    from services.llm_server import LocalLLM

    STATE.mkdir(parents=True, exist_ok=True)
    with LocalLLM(local_gguf(ROOT / "data"), 1, log_path=STATE / "llm-server.log") as server:
        settings = TeacherSettings(kind="llm", url=server.url, concurrency=1, timeout_s=120)
        teacher = CachedResponder(
            llm_responder(settings, load_task(TASK)), LabelCache(STATE / "teacher-cache.sqlite")
        )
        try:
            return {k: answered(p, gen, teacher, say) for k, p in prompts.items()}
        finally:
            teacher.close()


def served_replies(student: Generator, gen: Generate, prompts: list[str]) -> list[str]:
    """``student``'s greedy replies as the Serve app decodes them (llama.cpp, its Q8_0 export)."""
    with tempfile.TemporaryDirectory() as tmp:
        student.save(Path(tmp))
        served = on_runtime(student, Path(tmp), "llama.cpp", 2, ROOT / "data")
        return [served.reply(chat(gen.system_prompt, p), gen.max_new_tokens, gen.stop).text
                for p in prompts]  # fmt: skip


def scores(
    student: Generator, gen: Generate, prompts: list[str], refs: list[str], bad: float
) -> dict[str, Any]:
    """Held-out chrF against the teacher, the share rated bad, the per-token log-likelihood."""
    made = served_replies(student, gen, prompts)
    each = [chrf(m, r) for m, r in zip(made, refs, strict=True)]
    batch = sft_batch(student, [chat(gen.system_prompt, p) for p in prompts], refs)
    per_token = reply_token_logps(student, batch)
    return {
        "chrf_each": [round(c, 2) for c in each],
        "chrf": round(sum(each) / len(each), 2),
        "rated_bad": round(sum(c < bad for c in each) / len(each), 3),
        "logp": round(float(per_token.mean()), 3),
    }


def review_data(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """The task's generate block, and the teacher's replies to ``--train`` and ``--eval``
    review prompts (``bench.generate_lora`` too)."""
    gen = load_task(TASK).generate
    assert gen is not None
    train, held = split("amazon", args.train, args.eval)
    got = teacher_replies({"train": [gen.prompt(t) for t in train],
                           "eval": [gen.prompt(t) for t in held]}, gen, say)  # fmt: skip
    return {"gen": gen, **got}


def one_round(
    base: Generator, data: dict[str, Any], args: Any, lr: float,
    options: Callable[[Generator], dict[str, Any]] = lambda student: {},
) -> dict[str, Any]:  # fmt: skip
    """A round from a copy of ``base``'s weights on the teacher's training replies, with the
    ``fine_tune`` options made from that copy (timed with the round); its seconds, last loss
    and held-out scores."""
    gen = data["gen"]
    torch.manual_seed(args.seed)
    student = copy.deepcopy(base)
    prompts, replies = data["train"]
    chats = [chat(gen.system_prompt, p) for p in prompts]
    start = time.perf_counter()
    losses = fine_tune(student, chats, replies, args.epochs, args.batch_size, lr, args.seed,
                       **options(student))  # fmt: skip
    seconds = round(time.perf_counter() - start, 1)
    held = scores(student, gen, data["eval"][0], data["eval"][1], args.bad_below)
    return {"train_s": seconds, "last_loss": round(losses[-1], 3), **held}


def arm(
    base: Generator, data: dict[str, Any], pairs: Pairs, weight: float, args: Any
) -> dict[str, Any]:
    """One round from ``base``'s weights: SFT on the teacher's replies, DPO at ``weight``."""

    def dpo(student: Generator) -> dict[str, Any]:
        if weight <= 0:
            return {}
        return {"preference": Preference.reference(student, pairs, weight, args.beta)}

    return {"dpo_weight": weight, **one_round(base, data, args, args.lr, dpo)}


def run(args: argparse.Namespace, say: Any = print) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    data = review_data(args, say)
    gen = data["gen"]
    base = Generator.from_gguf(student_gguf(ROOT / "data"))
    prompts, replies = data["train"]
    said = served_replies(base, gen, prompts)
    rated_bad = [i for i, (s, r) in enumerate(zip(said, replies, strict=True))
                 if chrf(s, r) < args.bad_below]  # fmt: skip
    pairs = Pairs([chat(gen.system_prompt, prompts[i]) for i in rated_bad],
                  [replies[i] for i in rated_bad], [said[i] for i in rated_bad])  # fmt: skip
    say(f"{len(rated_bad)} of {len(prompts)} training replies rated bad: the pairs")
    rows = [{"dpo_weight": None, "train_s": 0.0, "last_loss": None,
             **scores(base, gen, data["eval"][0], data["eval"][1], args.bad_below)}]  # fmt: skip
    for weight in [0.0, *args.dpo_weights]:
        rows.append(arm(base, data, pairs, weight, args))
        say(f"  {rows[-1]}")
    sizes = {"train": len(prompts), "eval": len(data["eval"][0]), "pairs": len(pairs)}
    return {"rows": rows, "sizes": sizes, "settings": vars(args)}


def table(result: dict[str, Any]) -> str:
    rows = [[_name(r["dpo_weight"]),
             r["chrf"], f"{r['rated_bad']:.0%}", r["logp"], r["train_s"]]
            for r in result["rows"]]  # fmt: skip
    header = ["student", "held-out chrF vs the teacher", "rated bad", "log-lik/token",
              "round (s)"]  # fmt: skip
    s, cfg = result["sizes"], result["settings"]
    head = (
        f"{s['train']} review prompts answered by the teacher; {s['pairs']} of the "
        f"never-retrained student's replies to them rated bad (chrF < {cfg['bad_below']:g}) "
        f"make the pairs; {s['eval']} held-out prompts. {cfg['epochs']} epochs at "
        f"{cfg['lr']:g}, β {cfg['beta']:g}, seed {cfg['seed']}.\n\n"
    )
    sft = next(r for r in result["rows"] if r["dpo_weight"] == 0.0)
    lines = [
        f"- dpo_weight {r['dpo_weight']:g} against SFT alone: chrF {paired(r, sft)}"
        for r in result["rows"] if r["dpo_weight"]
    ]  # fmt: skip
    return head + markdown_table(header, rows) + "\n" + "\n".join(lines) + "\n"


def _name(weight: float | None) -> str:
    if weight is None:
        return "never retrained"
    return "SFT (dpo_weight 0)" if weight == 0 else f"SFT + DPO, dpo_weight {weight:g}"


def paired(row: dict[str, Any], base: dict[str, Any]) -> str:
    """The mean per-prompt chrF difference and its standard error (same prompts, paired)."""
    diffs = [a - b for a, b in zip(row["chrf_each"], base["chrf_each"], strict=True)]
    mean = sum(diffs) / len(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return f"{mean:+.2f} ± {se:.2f} (standard error over {len(diffs)} paired prompts)"


def round_options(parser: argparse.ArgumentParser, train: int, held_out: int) -> None:
    """The options of a one-round comparison on review prompts (``bench.generate_lora`` too)."""
    parser.add_argument("--train", type=int, default=train, help="review prompts for the round")
    parser.add_argument("--eval", type=int, default=held_out, help="held-out review prompts")
    parser.add_argument("--bad-below", type=float, default=30.0, help="chrF a person rates bad")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5, help="the whole model's SFT rate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    round_options(parser, train=48, held_out=24)
    parser.add_argument("--dpo-weights", type=float, nargs="+", default=[1.0])
    parser.add_argument("--beta", type=float, default=0.1)
    args = parser.parse_args()
    result = run(args)
    publish("generate_dpo", result, table(result))


if __name__ == "__main__":
    main()
