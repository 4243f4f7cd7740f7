"""A generate task's round on Ray Train, and the gate's measures of a generative student.

The round is sequence-level KD (``training.sequence_kd``, Kim & Rush 2016): ``TorchTrainer`` runs
``train_loop`` on each worker, which fine-tunes the parent version (or, for version 1, the
base SmolLM2) on its shard of (chat, reply, weight) rows: the teacher's replies, and the
replies people corrected, which weigh ``correction_weight`` and replace the teacher's on their
request; with ``dpo_weight`` > 0, plus a DPO term on the round's preference pairs
(``training.sft.Preference``), which travel in the config (a rated-bad reply is rare: a few
hundred at most). The same scaffolding as a classifier's round (``training.round``): the rows
travel as a Ray Dataset, the cluster's CPUs are checked first, the fit is bounded by
``round_timeout_s``.

The gate's signals on held-out chats (``measure``): the mean sentence chrF of the student's
greedy replies against the teacher's (``training.chrf``), the teacher replies' mean per-token
log-likelihood under the student, and its tokens/s.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from distillery.contracts import ReplyMeasures
from distillery.events import ChatTurn
from distillery.settings import Settings
from distillery.task import Task
from models.generator import Generator
from models.gguf import student_gguf
from models.gguf_export import GGUF_FILE, export
from training.chrf import mean_chrf
from training.ray_train import train_on_ray
from training.sft import Pairs, Preference, fine_tune, reply_token_logps, sft_batch

COLUMNS = ["messages", "target", "weight"]  # what a worker trains on: chat JSON, reply, weight


def chat_of(row: Any, task: Task) -> list[ChatTurn]:
    """The chat a label row was answered for: its ``messages``, else the task's system prompt
    and its text (a row written before labels carried the chat)."""
    messages = row.get("messages") if hasattr(row, "get") else None
    if messages is not None and len(messages):
        return [ChatTurn.model_validate(dict(m)) for m in messages]
    system = task.generate.system_prompt if task.generate else ""
    return [ChatTurn(role="system", content=system), ChatTurn(role="user", content=row["text"])]


def train_loop(config: dict[str, Any]) -> None:
    """One worker: its shard, ``epochs`` passes of AdamW on the SFT loss; rank 0 saves the
    fine-tuned student (``save_pretrained``) as the final checkpoint."""
    import ray.train
    import torch

    torch.set_num_threads(1)
    context = ray.train.get_context()
    shard = ray.train.get_dataset_shard("train")
    parts = list(shard.iter_batches(batch_format="pandas", batch_size=None))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    generator = Generator.load(Path(config["init_dir"]))
    generator.model = ray.train.torch.prepare_model(generator.model)
    chats = [_chat(c) for c in frame["messages"]]
    start = time.perf_counter()
    preference = _preference(generator, config)
    losses = fine_tune(
        generator, chats, list(frame["target"]), config["epochs"], config["batch_size"],
        config["learning_rate"], config["seed"], list(frame["weight"]), preference,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    steps = -(-len(frame) // config["batch_size"])  # per epoch
    metrics = {
        "loss": _mean(losses[-steps:]),  # the last epoch's mean: one step's is noise
        "first_epoch_loss": _mean(losses[:steps]),
        "epoch": float(config["epochs"]),
        "examples_per_s": len(frame) * config["epochs"] / max(seconds, 1e-9),
        "preference_pairs": float(len(preference.pairs) if preference else 0),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if context.get_world_rank() == 0:
            generator.model = getattr(generator.model, "module", generator.model)
            generator.save(Path(tmp))
            export(generator.model, Path(config["base_gguf"]), Path(tmp) / GGUF_FILE)
            (Path(tmp) / "train_metrics.json").write_text(json.dumps(metrics))
        checkpoint = (
            ray.train.Checkpoint.from_directory(tmp) if context.get_world_rank() == 0 else None
        )
        ray.train.report(metrics, checkpoint=checkpoint)


def _chat(messages: str) -> list[ChatTurn]:
    return [ChatTurn.model_validate(m) for m in json.loads(messages)]


def _preference(generator: Generator, config: dict[str, Any]) -> Preference | None:
    """The round's DPO term, its reference scored under the starting student (every worker
    holds all the pairs: they are few, and the term is averaged like the SFT loss)."""
    rows = config["pairs"]  # none unless dpo_weight > 0 (``run_round``)
    if not rows:
        return None
    pairs = Pairs([_chat(p["messages"]) for p in rows], [p["chosen"] for p in rows],
                  [p["rejected"] for p in rows])  # fmt: skip
    return Preference.reference(generator, pairs, config["dpo_weight"], config["dpo_beta"])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_round(
    settings: Settings,
    rows: pd.DataFrame,
    init_dir: Path,
    name: str,
    pairs: pd.DataFrame | None = None,
) -> tuple[Path, dict[str, float]]:
    """Fine-tune ``init_dir`` on ``rows`` (``COLUMNS``), with a DPO term on ``pairs``
    (messages, chosen, rejected) when ``dpo_weight`` > 0; its checkpoint folder and metrics."""
    import pyarrow as pa
    import ray.data

    cfg = settings.train
    config = {
        "init_dir": str(init_dir), "epochs": cfg.epochs, "batch_size": min(cfg.batch_size, 8),
        "learning_rate": cfg.generate_learning_rate, "seed": cfg.seed,
        "base_gguf": str(student_gguf(settings.paths.data_dir)),  # the export's metadata
        "dpo_weight": cfg.dpo_weight, "dpo_beta": cfg.dpo_beta,
        "pairs": [] if pairs is None or cfg.dpo_weight <= 0 else pairs.to_dict("records"),
    }  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.from_blocks([pa.Table.from_pandas(rows[COLUMNS], preserve_index=False)])
    return train_on_ray(train_loop, config, dataset, settings, name)


def measure(
    generator: Generator, task: Task, holdout: pd.DataFrame, golden: pd.DataFrame
) -> ReplyMeasures:
    """``ReplyMeasures`` on ``holdout`` (chats and teacher replies) and ``golden`` (corrections)."""
    assert task.generate is not None
    gen = task.generate
    chats = [chat_of(row, task) for _, row in holdout.iterrows()]
    replies = [generator.reply(c, gen.max_new_tokens, gen.stop) for c in chats]
    batch = sft_batch(generator, chats, list(holdout["reply"]))
    per_token = reply_token_logps(generator, batch)
    tokens = sum(r.completion_tokens for r in replies)
    golden_chrf = None
    if len(golden):
        g_chats = [chat_of(row, task) for _, row in golden.iterrows()]
        made = [generator.reply(c, gen.max_new_tokens, gen.stop).text for c in g_chats]
        golden_chrf = round(mean_chrf(made, list(golden["corrected_reply"])), 2)
    return ReplyMeasures(
        round(mean_chrf([r.text for r in replies], list(holdout["reply"])), 2),
        round(float(per_token.mean()), 4),
        round(tokens / max(sum(r.seconds for r in replies), 1e-9), 2),
        golden_chrf, len(holdout), len(golden),
    )  # fmt: skip
