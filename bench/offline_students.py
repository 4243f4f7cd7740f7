"""What the two teacher benchmarks share (``bench.teachers``, ``bench.retention``): the held-out
and training rows of a VADER task, every row labelled by a teacher, a student distilled offline
from those labels, and that student served by Ray Serve under ``wrk``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import ROOT
from distillery import vader
from distillery.settings import StudentSettings
from distillery.task import Task
from models.teacher import Teacher
from models.weights import teacher_model_path


@dataclass
class Rows:
    texts: list[str]
    labels: list[int]  # index into the task's labels
    domains: list[str]

    def first(self, per_domain: int) -> Rows:
        """The first ``per_domain`` rows of each domain (a smaller budget of the same texts)."""
        out, seen = Rows([], [], []), dict.fromkeys(vader.DOMAINS, 0)
        for text, label, domain in zip(self.texts, self.labels, self.domains, strict=True):
            if seen[domain] < per_domain:
                seen[domain] += 1
                out.texts.append(text)
                out.labels.append(label)
                out.domains.append(domain)
        return out


def split(
    task: Task, data_dir: Path, per_domain: int, train_n: int, seed: int
) -> tuple[Rows, Rows]:
    """Held-out and training rows, the same for every teacher; disjoint."""
    evals, train = Rows([], [], []), Rows([], [], [])
    for domain in vader.DOMAINS:
        rows = vader.load(domain, data_dir)
        random.Random(seed).shuffle(rows)
        per_train = train_n // len(vader.DOMAINS)
        for out, chunk in ((evals, rows[:per_domain]), (train, rows[per_domain:][:per_train])):
            for row in chunk:
                label = row.label if task.name == "sentiment" else row.domain
                out.texts.append(row.text)
                out.labels.append(task.index(label))
                out.domains.append(domain)
    return evals, train


def label_all(
    teacher: Teacher, texts: list[str], say: Any, batch: int = 8
) -> tuple[np.ndarray, int]:
    """(probs (N, C), unreadable count); an unreadable row keeps the uniform distribution."""
    out, unreadable = [], 0
    start = time.monotonic()
    for i in range(0, len(texts), batch):
        answer = teacher.label(texts[i : i + batch])
        unreadable += len(answer.unreadable)
        out.append(answer.probs)
        if (i // batch) % 25 == 0:
            took = time.monotonic() - start
            say(f"  {teacher.teacher_id}: {i + len(answer)}/{len(texts)} ({took:.0f}s)")
    return np.concatenate(out), unreadable


def accuracy(probs: np.ndarray, rows: Rows) -> tuple[float, dict[str, float]]:
    hits = probs.argmax(1) == np.asarray(rows.labels)
    domains = np.asarray(rows.domains)
    per = {d: round(float(hits[domains == d].mean()), 3) for d in vader.DOMAINS}
    return round(float(hits.mean()), 3), per


@dataclass(frozen=True)
class Recipe:
    """A student's shape and how it is fitted from scratch (``bench.student_shapes.SHAPES``)."""

    shape: StudentSettings
    epochs: int
    learning_rate: float
    general_epochs: int = 0  # first, epochs of general distillation on the unlabelled pool


@dataclass
class Pool:
    """Unlabelled texts and the embedding teacher's sentence embeddings of them, (N, H): what a
    recipe with ``general_epochs`` learns before its labels (``training.represent``)."""

    texts: list[str]
    embeddings: Any  # torch.Tensor (N, H), L2-normalised


def unlabelled(held_out: list[str], n: int, seed: int) -> list[str]:
    """Up to ``n`` distinct VADER texts of every domain outside ``held_out`` (the training
    texts among them): the traffic a student may learn embeddings from."""
    held = set(held_out)
    texts = [r.text for d in vader.DOMAINS for r in vader.load(d, ROOT / "data")]
    random.Random(seed).shuffle(texts)
    return [t for t in dict.fromkeys(texts) if t not in held][:n]


def embedding_pool(texts: list[str], say: Any) -> Pool:
    """MiniLM's (the embedding teacher's) sentence embeddings of ``texts``, 64 at a time."""
    import torch

    from distillery.settings import Settings
    from models.embedding_teacher import ZeroShotTeacher

    teacher = ZeroShotTeacher(teacher_model_path(Settings().teacher), ["a text"], 1.0)
    start = time.monotonic()
    chunks = [teacher.embed(texts[i : i + 64]) for i in range(0, len(texts), 64)]
    say(f"  MiniLM embedded {len(texts)} texts in {time.monotonic() - start:.0f}s")
    return Pool(texts, torch.cat(chunks))


def generalist(shape: StudentSettings, task: Task, pool: Pool, epochs: int, say: Any) -> dict:
    """A fresh student of ``shape`` after ``epochs`` of general distillation on ``pool``: its
    encoder's weights, for every recipe and budget that starts from them."""
    import torch
    from transformers import AutoTokenizer

    from distillery.settings import Settings
    from models.student import new_student
    from training.represent import represent

    settings = Settings()
    base = teacher_model_path(settings.teacher)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = new_student(task.label_names, shape, tokenizer.vocab_size, 0, base)
    config = {"epochs": epochs, "learning_rate": GENERAL_LR, "batch_size": 32, "seed": 0,
              "max_tokens": settings.serve.max_tokens}  # fmt: skip
    history = represent(
        model, tokenizer, pool.texts, pool.embeddings, config,
        lambda m: say(f"  general distillation, epoch {m['epoch']:g}: 1 - cos {m['loss']:.4f}"),
    )  # fmt: skip
    return {"encoder": model.bert.state_dict(), "history": history}


GENERAL_LR = 5e-4  # AdamW rate of general distillation (bench.retention's note says why)


def default_recipe() -> Recipe:
    from distillery.settings import Settings

    settings = Settings()
    return Recipe(
        settings.student, settings.train.scratch_epochs, settings.train.scratch_learning_rate
    )


def distil(
    task: Task,
    train: Rows,
    probs: np.ndarray,
    evals: Rows,
    teacher_probs: np.ndarray,
    recipe: Recipe | None = None,
    encoder: dict | None = None,
) -> dict:
    """A student from scratch (the default shape unless ``recipe``; its encoder's weights from
    ``encoder`` when given, a ``generalist``'s) on ``probs`` for ``train``: accuracy against the
    human labels, agreement with its teacher, both on the held-out rows."""
    import pandas as pd
    import torch
    from transformers import AutoTokenizer

    from distillery.settings import Settings
    from models.student import Student, new_student
    from training.round import fit

    settings = Settings()
    recipe = recipe or default_recipe()
    torch.manual_seed(0)
    base = teacher_model_path(settings.teacher)  # the student's tokenizer and embeddings
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = new_student(task.label_names, recipe.shape, tokenizer.vocab_size, 0, base)
    if encoder is not None:
        model.bert.load_state_dict(encoder)
    frame = pd.DataFrame(
        {
            "text": train.texts,
            "teacher_logits": [list(np.log(np.clip(p, 1e-12, None))) for p in probs],
            "correction": -1,
            "kd_weight": 1.0,
        }
    )
    cfg = settings.train
    config = {
        **cfg.model_dump(include={"kd_temperature", "kd_weight", "correction_weight"}),
        "batch_size": cfg.batch_size, "seed": 0, "epochs": recipe.epochs,
        "learning_rate": recipe.learning_rate, "max_tokens": settings.serve.max_tokens,
    }  # fmt: skip
    torch.set_num_threads(2)
    fit(model, frame, tokenizer, config)
    student = Student(model, tokenizer, settings.serve.max_tokens)
    return {
        **evaluate(student, evals, teacher_probs),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "model": student,
    }


def evaluate(student: Any, evals: Rows, teacher_probs: np.ndarray) -> dict[str, Any]:
    """A student's accuracy against the human labels (overall and per domain) and its agreement
    with its teacher's argmax, both on the held-out rows."""
    return evaluate_probs(student.predict_proba(evals.texts), evals, teacher_probs)


def evaluate_probs(predicted: np.ndarray, evals: Rows, teacher_probs: np.ndarray) -> dict:
    """``evaluate`` for probabilities already predicted, (N, C)."""
    acc, per = accuracy(predicted, evals)
    agreement = float((predicted.argmax(1) == teacher_probs.argmax(1)).mean())
    return {"accuracy": acc, "per_domain": per, "teacher_agreement": round(agreement, 3)}


def served_rate(
    student: Any,
    sample: list[str],
    seconds: float,
    say: Any,
    name: str = "teachers",
    quantize: bool = False,
    batched: int = 0,
) -> dict[str, Any]:
    """A student served by Ray Serve (registered as v1 of a registry of its own under
    ``state/bench-<name>``, sampling off, its linear layers dynamic int8 if ``quantize``, as
    ``DISTILLERY_SERVE_QUANTIZE`` does), loaded by ``wrk`` with 64 clients of one text each;
    with ``batched``, also with 64 clients of ``batched`` texts a request (as an application that
    sends its texts together does, and as the labeler sends the LLM 8 at a time), whose texts/s
    is under ``"batched"``."""
    import shutil

    from bench.harness import NO_SAMPLING, bench_settings, run_wrk
    from bench.serve import _bodies
    from cli.launcher import up
    from training.registry import Registry, VersionMeta

    settings = bench_settings(name, **NO_SAMPLING, quantize=quantize)
    shutil.rmtree(settings.paths.registry_dir, ignore_errors=True)
    folder = settings.paths.state_dir / "student"
    shutil.rmtree(folder, ignore_errors=True)
    student.model.save_pretrained(folder)
    student.tokenizer.save_pretrained(folder)
    registry = Registry(settings.paths.model_store_url())
    meta = registry.register(folder, VersionMeta(version=0))
    registry.promote(meta.version, f"bench {name}: a student distilled offline")
    running = up(settings, say=lambda _: None)
    try:
        url = f"{running.api_url}/v1/predict"
        bodies = _bodies(settings.paths.state_dir, sample, 1)
        run_wrk(url, bodies, 16, 5)  # warm up
        result: dict[str, Any] = run_wrk(url, bodies, 64, seconds).row()
        say(f"  served student: {result['rps']} texts/s at 64 clients")
        if batched > 1:
            many = run_wrk(url, _bodies(settings.paths.state_dir, sample, batched), 64, seconds)
            texts_per_s = round(many.rps * batched, 1)
            result["batched"] = {"texts": batched, "texts_per_s": texts_per_s, **many.row()}
            say(f"  served student: {texts_per_s} texts/s at 64 clients of {batched} texts")
        return result
    finally:
        running.stop()


def fresh_texts(seen: set[str], n: int) -> list[str]:
    """``n`` VADER texts outside ``seen`` (a teacher's speed on texts no cache holds)."""
    fresh = [
        r.text for d in vader.DOMAINS for r in vader.load(d, ROOT / "data") if r.text not in seen
    ]
    random.Random(7).shuffle(fresh)
    return fresh[:n]


def local_llm(threads: int, state: Path) -> Any:
    """The local teacher LLM's real llama.cpp server on ``threads`` threads, its log under
    ``state`` (a context manager: ``with local_llm(...) as server: server.url``)."""
    from models.gguf import local_gguf
    from services.llm_server import LocalLLM

    state.mkdir(parents=True, exist_ok=True)
    return LocalLLM(local_gguf(ROOT / "data"), threads, log_path=state / "llm-server.log")


def serving_sample() -> list[str]:
    """The texts a served student is loaded with: the last 200 of each VADER domain."""
    return [r.text for d in vader.DOMAINS for r in vader.load(d, ROOT / "data")[-200:]]
