"""Do LoRA adapters make a generate round cheaper, and at what cost in quality?
(``make bench-generate-lora``; issue 19: "LoRA adapters (peft) are welcome if they make rounds and
hot swaps cheaper. Measure it.")

The task and data are ``bench.generate_dpo``'s: ``tasks/reply.yaml`` over VADER's product
reviews, the teacher's replies from the local LLM through its real llama.cpp server (cached in
``state/bench-generate``). Offline, with the round's own ``training.sft.fine_tune``, from the
same starting weights, seed and row order, one round per arm on ``--train`` teacher replies:
full fine-tuning at the round's default rate, and adapters of ``--rank`` on every projection
(``training.sft.Lora``) at each ``--lora-lrs`` (adapters want a higher rate than the whole
model: Hu et al. 2021 used 2e-4 to 5e-4 on GPT-2). Each arm on ``--eval`` held-out prompts,
decoded as served (llama.cpp on the Q8_0 export): mean chrF against the teacher's replies, the
teacher replies' per-token log-likelihood, the round's seconds, the parameters it trains and
their AdamW state (2 fp32 moments each). The adapters are merged at the end, so what a hot swap
loads is the same GGUF either way. Writes ``bench/results/generate_lora.{json,md}``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench.generate_dpo import one_round, paired, review_data, round_options
from bench.harness import ROOT, markdown_table, publish
from models.generator import Generator
from models.gguf import student_gguf
from training.sft import Lora


def trained_params(model: Any, lora: Lora | None) -> int:
    """Parameters a round updates: the whole model's, or the adapters' (A: r×in, B: out×r)."""
    if lora is None:
        return sum(p.numel() for p in model.parameters())
    return sum(
        lora.rank * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.targets
    )


def arm(base: Generator, data: dict[str, Any], lr: float, lora: Lora | None, args: Any) -> dict:
    trained = trained_params(base.model, lora)
    return {
        "lora_rank": lora.rank if lora else None, "lr": lr,
        "trained_m": round(trained / 1e6, 2), "adam_state_mb": round(trained * 8 / 2**20, 1),
        **one_round(base, data, args, lr, lambda student: {"lora": lora}),
    }  # fmt: skip


def run(args: argparse.Namespace, say: Any = print) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    data = review_data(args, say)
    base = Generator.from_gguf(student_gguf(ROOT / "data"))
    rows = [arm(base, data, args.lr, None, args)]
    say(f"  full: {rows[-1]}")
    for lr in args.lora_lrs:
        rows.append(arm(base, data, lr, Lora(rank=args.rank, alpha=2 * args.rank), args))
        say(f"  LoRA at {lr:g}: {rows[-1]}")
    sizes = {"train": len(data["train"][0]), "eval": len(data["eval"][0])}
    return {"rows": rows, "sizes": sizes, "settings": vars(args)}


def table(result: dict[str, Any]) -> str:
    rows = [[_name(r), r["chrf"], r["logp"], r["train_s"], r["trained_m"], r["adam_state_mb"]]
            for r in result["rows"]]  # fmt: skip
    header = ["round", "held-out chrF vs the teacher", "log-lik/token", "round (s)",
              "trained params (M)", "AdamW state (MB)"]  # fmt: skip
    s, cfg = result["sizes"], result["settings"]
    head = (
        f"{s['train']} review prompts answered by the teacher, {s['eval']} held out; "
        f"{cfg['epochs']} epochs, batches of {cfg['batch_size']}, seed {cfg['seed']}, "
        f"{cfg['threads']} threads.\n\n"
    )
    full = result["rows"][0]
    lines = [
        f"- {_name(r)} against full fine-tuning: chrF {paired(r, full)}; round "
        f"{r['train_s'] / full['train_s']:.2f}× the time"
        for r in result["rows"][1:]
    ]
    return head + markdown_table(header, rows) + "\n" + "\n".join(lines) + "\n"


def _name(row: dict[str, Any]) -> str:
    if row["lora_rank"] is None:
        return f"full fine-tuning at {row['lr']:g}"
    return f"LoRA rank {row['lora_rank']} at {row['lr']:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    round_options(parser, train=96, held_out=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lora-lrs", type=float, nargs="+", default=[5e-4, 1e-3])
    args = parser.parse_args()
    result = run(args)
    publish("generate_lora", result, table(result))


if __name__ == "__main__":
    main()
