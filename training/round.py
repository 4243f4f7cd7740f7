"""One distillation round on Ray Train: ``TorchTrainer`` runs ``train_loop`` on each worker.

The loop minimises ``distillation_loss`` (KD to the teacher's logits + cross-entropy on human
corrections) from the parent student's weights, or from a fresh student for the first version.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distillery import faults
from distillery.actors import find_scheduler
from distillery.contracts import RoundProgress
from distillery.settings import Settings
from distillery.task import Task
from models.weights import teacher_model_path
from training.data import RoundData
from training.ray_train import train_on_ray


def _batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _tensors(
    frame: pd.DataFrame, tokenizer: Any, max_tokens: int, teacher_width: int = 0
) -> dict[str, Any]:
    import torch

    enc = tokenizer(
        list(frame["text"]), truncation=True, max_length=max_tokens, padding=True,
        return_tensors="pt",
    )  # fmt: skip
    out = {
        "input_ids": enc["input_ids"],  # (B, L)
        "attention_mask": enc["attention_mask"],  # (B, L)
        "teacher_logits": torch.tensor(
            np.stack(frame["teacher_logits"].to_list()), dtype=torch.float32
        ),
        "correction": torch.tensor(list(frame["correction"]), dtype=torch.long),  # (B,)
        "kd_weight": torch.tensor(list(frame["kd_weight"]), dtype=torch.float32),  # (B,)
        "ce_weight": torch.tensor(
            list(frame["ce_weight"]) if "ce_weight" in frame else [1.0] * len(frame),
            dtype=torch.float32,
        ),  # (B,)
    }
    if teacher_width:  # the teacher's sentence states, where the label carried one
        states = frame["teacher_embedding"] if "teacher_embedding" in frame else [None] * len(frame)
        has = [s is not None and len(s) == teacher_width for s in states]
        hidden = np.zeros((len(frame), teacher_width), dtype=np.float32)
        for i, (state, ok) in enumerate(zip(states, has, strict=True)):
            if ok:
                hidden[i] = state
        out["teacher_hidden"] = torch.from_numpy(hidden)  # (B, H_t)
        out["has_hidden"] = torch.tensor(has, dtype=torch.bool)  # (B,)
    return out


def _load_model(config: dict[str, Any]) -> Any:
    from transformers import BertForSequenceClassification

    from distillery.settings import StudentSettings
    from models.student import new_student

    if config["init_dir"]:
        model = BertForSequenceClassification.from_pretrained(config["init_dir"])
    else:
        shape = StudentSettings.model_validate(config["student"])
        teacher = Path(config["teacher_dir"])
        model = new_student(config["labels"], shape, config["vocab_size"], config["seed"], teacher)
    _attach_projection(model, config)
    return model


def _attach_projection(model: Any, config: dict[str, Any]) -> None:
    """With a hidden-state loss and a student narrower (or wider) than the teacher, a learned
    W_h (H_s → H_t) rides on the model while it trains (so the optimizer, DDP and the resume
    checkpoint see it) and is saved beside it as ``hidden_projection.pt`` for the next round."""
    import torch

    width, own = int(config.get("teacher_width", 0)), model.config.hidden_size
    if float(config.get("hidden_weight", 0.0)) <= 0 or width in (0, own):
        return
    model.hidden_projection = torch.nn.Linear(own, width)
    saved = Path(config["init_dir"] or "/nonexistent") / "hidden_projection.pt"
    if saved.is_file():
        model.hidden_projection.load_state_dict(torch.load(saved, weights_only=True))


OnBatch = Callable[[int, int, int, float], None]  # (epoch, batch, batches, loss)
TRAIN_COLUMNS = [
    "text", "teacher_logits", "correction", "kd_weight", "ce_weight", "teacher_embedding",
]  # fmt: skip


def _epoch(
    model: Any,
    optimizer: Any,
    frame: pd.DataFrame,
    tokenizer: Any,
    cfg: dict,
    on_batch: OnBatch | None = None,
) -> float:
    from models.embedding_teacher import mean_pool
    from training.losses import distillation_loss, hidden_state_loss

    hidden_weight = float(cfg.get("hidden_weight", 0.0))
    width = int(cfg.get("teacher_width", 0)) if hidden_weight > 0 else 0
    projection = getattr(getattr(model, "module", model), "hidden_projection", None)
    model.train()
    total, seen = 0.0, 0
    batches = _batches(len(frame), cfg["batch_size"], cfg["seed"] + cfg["epoch"])
    for step, batch_ids in enumerate(batches):
        t = _tensors(frame.iloc[batch_ids], tokenizer, cfg["max_tokens"], width)
        out = model(
            input_ids=t["input_ids"], attention_mask=t["attention_mask"],
            output_hidden_states=bool(width),
        )  # fmt: skip
        loss = distillation_loss(
            out.logits, t["teacher_logits"], t["correction"], cfg["kd_temperature"],
            cfg["kd_weight"], cfg["correction_weight"], t["kd_weight"], t["ce_weight"],
        )  # fmt: skip
        if width:
            pooled = mean_pool(out.hidden_states[-1], t["attention_mask"])  # (B, H_s)
            loss = loss + hidden_weight * hidden_state_loss(
                pooled, t["teacher_hidden"], projection, t["has_hidden"]
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch_ids)
        seen += len(batch_ids)
        if on_batch is not None:
            on_batch(cfg["epoch"], step + 1, len(batches), total / seen)
    return total / max(seen, 1)


def fit(
    model: Any,
    frame: pd.DataFrame,
    tokenizer: Any,
    config: dict[str, Any],
    on_epoch: Callable[[dict[str, float], Any], None] | None = None,
    optimizer: Any = None,
    first_epoch: int = 0,
    on_batch: OnBatch | None = None,
) -> list[dict[str, float]]:
    """Epochs ``first_epoch`` … ``config["epochs"] - 1`` of AdamW (``learning_rate``) over
    ``frame`` (text, teacher_logits (C,), correction, kd_weight); no Ray. Returns per-epoch
    metrics (epoch, mean loss, examples/s) and hands each, with the optimizer, to ``on_epoch``
    as soon as its epoch ends. Pass a restored ``optimizer`` to resume."""
    optimizer = optimizer or _optimizer(model, config)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(first_epoch, config["epochs"]):
        loss = _epoch(model, optimizer, frame, tokenizer, {**config, "epoch": epoch}, on_batch)
        elapsed = time.perf_counter() - start
        metrics: dict[str, float] = {
            "epoch": epoch + 1,
            "loss": loss,
            "examples_per_s": len(frame) * (epoch + 1 - first_epoch) / elapsed,
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, optimizer)
    return history


def _optimizer(model: Any, config: dict[str, Any]) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=config["learning_rate"])


def _restore(model: Any, config: dict[str, Any]) -> tuple[Any, int]:
    """(optimizer, first epoch) from this run's latest checkpoint, if a worker died after one:
    Ray Train restarts the workers (``FailureConfig``) and they pick up from there."""
    import ray.train
    import torch

    optimizer = _optimizer(model, config)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return optimizer, 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / "resume.pt", weights_only=True)
    getattr(model, "module", model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return optimizer, int(state["epoch"])


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: its shard of the rows, ``epochs`` passes. After each
    epoch rank 0 checkpoints weights + optimizer (a restarted worker group resumes from it);
    after the last, the student folder (``save_pretrained``) is the final checkpoint."""
    import ray.train
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    frame = _shard_rows(ray.train.get_dataset_shard("train"))
    tokenizer = AutoTokenizer.from_pretrained(config["tokenizer_dir"])
    model = ray.train.torch.prepare_model(_load_model(config))
    optimizer, first_epoch = _restore(model, config)

    def checkpoint_unless_last(metrics: dict[str, float], optimizer: Any) -> None:
        if metrics["epoch"] >= config["epochs"]:
            return
        second = first_epoch == 0 and metrics["epoch"] == 2  # epoch 1 was checkpointed
        if second and faults.armed("train.second_epoch", config.get("failpoint")):
            time.sleep(5)  # the controller polls workers for reports every few seconds
            faults.die()
        metrics = {**metrics, "resumed_at_epoch": first_epoch}
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                state = {
                    "model": getattr(model, "module", model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": int(metrics["epoch"]),
                }
                torch.save(state, Path(tmp) / "resume.pt")
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)

    progress = _progress_sender(config, len(frame) * world) if rank == 0 else None
    history = fit(
        model, frame, tokenizer, config, checkpoint_unless_last, optimizer, first_epoch, progress
    )
    metrics = {**history[-1], "resumed_at_epoch": first_epoch} if history else {}
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            unwrapped: Any = getattr(model, "module", model)
            projection = unwrapped._modules.pop("hidden_projection", None)  # not a serving part
            if projection is not None:
                torch.save(projection.state_dict(), Path(tmp) / "hidden_projection.pt")
            unwrapped.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            save_reference(unwrapped, tokenizer, frame, config["max_tokens"], Path(tmp))
            (Path(tmp) / "train_metrics.json").write_text(json.dumps(metrics))
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)


def _progress_sender(config: dict[str, Any], rows: int) -> OnBatch | None:
    """Rank 0's progress, every 5 batches, to the scheduler actor if one runs (it exports it
    to Prometheus and `distillery retrain` draws it as a bar)."""
    scheduler = find_scheduler()
    if scheduler is None:
        return None
    start, epochs, steps = time.perf_counter(), config["epochs"], [0]

    def send(epoch: int, batch: int, batches: int, loss: float) -> None:
        steps[0] += 1  # batches since this worker started (or resumed)
        if batch % 5 and batch != batches:
            return
        seen = rows * steps[0] / batches  # examples, all workers together
        progress = RoundProgress(
            round=config["name"], epoch=epoch + 1, epochs=epochs,
            done=min(1.0, (epoch + batch / batches) / epochs), loss=loss,
            examples_per_s=seen / max(time.perf_counter() - start, 1e-9),
        )  # fmt: skip
        scheduler.report_progress.remote(progress)

    return send


def save_reference(
    model: Any, tokenizer: Any, frame: pd.DataFrame, max_tokens: int, folder: Path
) -> None:
    """Save the novelty reference (``models.novelty``) of the rows this student trained on:
    at most 2,000 of them, enough for a mean and a 95th percentile."""
    from models.novelty import fit_reference
    from models.student import Student

    texts = list(frame["text"].sample(n=min(len(frame), 2_000), random_state=0))
    if len(texts) >= 2:
        _, pooled = Student(model, tokenizer, max_tokens).predict(texts)  # (N, H)
        fit_reference(pooled).save(folder)


def train_dataset(rows: pd.DataFrame) -> Any:
    """The round's training rows as a Ray Dataset: they travel through Ray's object store, so a
    worker on any node reads its shard (``get_dataset_shard``), not a file on the head's disk.
    Only the columns a worker trains on go (``TRAIN_COLUMNS``).

    ``from_blocks``, not ``from_pandas``: ``from_pandas`` reads each block's schema in a remote
    task that asks for a whole CPU, and beside Serve and the labeler the loop has none spare (the
    round's own CPUs are reserved for its workers), so the second round of the e2e test waited
    forever for it. ``from_blocks`` computes the metadata here; the split needs no task either
    (``InputDataBuffer -> OutputSplitter``, its coordinator actor takes 0 CPU)."""
    import pyarrow as pa
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the round logs its own
    table = pa.Table.from_pandas(
        rows[[c for c in TRAIN_COLUMNS if c in rows]], preserve_index=False
    )
    return ray.data.from_blocks([table])


def _shard_rows(shard: Any) -> pd.DataFrame:
    """This worker's rows: Ray Train splits the dataset into equal shards, one per worker."""
    parts = list(shard.iter_batches(batch_format="pandas", batch_size=None))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TRAIN_COLUMNS)
    return frame.reset_index(drop=True)


def run_round(
    settings: Settings, task: Task, data: RoundData, init_dir: Path | None, name: str
) -> tuple[Path, dict[str, float]]:
    """Train a candidate; returns its checkpoint folder and the final training metrics."""
    cfg = settings.train
    loop_config = {
        **cfg.model_dump(include={"kd_temperature", "kd_weight", "correction_weight"}),
        **cfg.model_dump(include={"batch_size", "seed"}),
        "epochs": cfg.epochs if init_dir else cfg.scratch_epochs,
        "learning_rate": cfg.learning_rate if init_dir else cfg.scratch_learning_rate,
        "tokenizer_dir": str(init_dir or teacher_model_path(settings.teacher)),
        "init_dir": str(init_dir) if init_dir else None,
        "teacher_dir": str(teacher_model_path(settings.teacher)),
        "labels": task.label_names,
        "student": settings.student.model_dump(),
        "vocab_size": _vocab_size(settings),
        "max_tokens": settings.serve.max_tokens,
        "failpoint": os.environ.get("DISTILLERY_FAILPOINT"),
        "hidden_weight": cfg.hidden_weight,
        "teacher_width": _teacher_width(settings),
        "name": name,
    }
    return train_on_ray(train_loop, loop_config, train_dataset(data.train), settings, name)


def _teacher_width(settings: Settings) -> int:
    from transformers import AutoConfig

    width = AutoConfig.from_pretrained(str(teacher_model_path(settings.teacher))).hidden_size
    return int(width)


def _vocab_size(settings: Settings) -> int:
    from transformers import AutoTokenizer

    return int(AutoTokenizer.from_pretrained(str(teacher_model_path(settings.teacher))).vocab_size)
