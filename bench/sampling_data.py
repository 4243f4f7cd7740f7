"""The sampling benchmark's data: the split of VADER texts, the stream as v1 served it, the
teacher's cached logits, v1 (trained once, cached) and the retrained candidates.

v1 is cached in ``state/bench-sampling/v1`` under two keys: ``bench_key.txt`` (its weights: the
seed texts and training settings) and ``reference_key.txt`` (its novelty reference: the source of
``Student.predict``, which computes the pooled embedding, and of ``models.novelty``). A change of
representation refits only the reference; a change of settings retrains v1.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.harness import ROOT
from distillery.vader import VaderRow
from models.weights import teacher_model_path

if TYPE_CHECKING:
    import pandas as pd

    from distillery.events import SampledPrediction
    from distillery.settings import Settings
    from distillery.task import Task
    from models.student import Student
    from models.teacher import Teacher

STATE = ROOT / "state" / "bench-sampling"


@dataclass(frozen=True)
class Split:
    """Every text the benchmark uses; the four lists are disjoint."""

    seed: list[VaderRow]  # v1's training set (movies)
    eval_movies: list[VaderRow]
    eval_tweets: list[VaderRow]
    stream: list[VaderRow]  # traffic after the shift, in arrival order

    def texts(self) -> list[str]:
        rows = self.seed + self.eval_movies + self.eval_tweets + self.stream
        return [row.text for row in rows]


def _unique(rows: Sequence[VaderRow], exclude: set[str]) -> list[VaderRow]:
    """``rows`` in order, first occurrence of each text, none of ``exclude``."""
    seen = set(exclude)
    out = []
    for row in rows:
        if row.text not in seen:
            seen.add(row.text)
            out.append(row)
    return out


def build_split(
    movies: Sequence[VaderRow],
    tweets: Sequence[VaderRow],
    seed_texts: Sequence[str],
    eval_n: int,
    stream_n: int,
    tweet_share: float,
    seed: int = 0,
) -> Split:
    """v1's seed movies (``seed_texts``, in that order), ``eval_n`` held-out movies and tweets,
    and a shuffled stream of ``stream_n`` requests, ``tweet_share`` of them tweets; all disjoint.
    Raises ValueError when the domains hold too few sentences."""
    by_text = {row.text: row for row in movies}
    seed_rows = [by_text[t] for t in dict.fromkeys(seed_texts)]
    rest_movies = _unique(movies, set(seed_texts))
    rest_tweets = _unique(tweets, {row.text for row in movies})
    n_tweets = round(stream_n * tweet_share)
    n_movies = stream_n - n_tweets
    if len(rest_movies) < eval_n + n_movies or len(rest_tweets) < eval_n + n_tweets:
        raise ValueError(
            f"need {eval_n + n_movies} movies and {eval_n + n_tweets} tweets beyond the seed, "
            f"have {len(rest_movies)} and {len(rest_tweets)}"
        )
    rng = random.Random(seed)
    rng.shuffle(rest_movies)
    rng.shuffle(rest_tweets)
    stream = rest_movies[eval_n : eval_n + n_movies] + rest_tweets[eval_n : eval_n + n_tweets]
    rng.shuffle(stream)
    return Split(seed_rows, rest_movies[:eval_n], rest_tweets[:eval_n], stream)


def load_split(data_dir: Path, seed_n: int, eval_n: int, stream_n: int, share: float) -> Split:
    """The split over VADER's movies and tweets; the seed is what ``seed_rows`` labels for v1."""
    from distillery import vader
    from training.cycle import _spread

    movies, tweets = vader.load("movies", data_dir), vader.load("tweets", data_dir)
    seed_texts = _spread([row.text for row in movies], seed_n)
    return build_split(movies, tweets, seed_texts, eval_n, stream_n, share)


def state_dir(teacher: str) -> Path:
    """Where a teacher's cached logits and its v1 live: one folder per teacher."""
    return STATE if teacher == "minilm" else STATE.with_name(f"{STATE.name}-{teacher}")


def teacher_logits(
    texts: list[str], cache: Path, settings: Settings, task: Task, llm: Teacher | None = None
) -> dict:
    """text → the teacher's logits (C,): MiniLM's cosine / temperature, or ``llm``'s (its
    renormalised label log-probabilities). Only texts missing from the ``cache`` (npz: ``texts``
    (N,), ``logits`` (N, C)) run through the teacher; it is saved every 200 texts, so an LLM
    pass that stops keeps what it paid for. A text the LLM could not read gets uniform logits."""
    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as saved:
            known = dict(zip(saved["texts"].tolist(), saved["logits"], strict=True))
    missing = [t for t in dict.fromkeys(texts) if t not in known]
    if not missing:
        return known
    print(f"teacher: labelling {len(missing)} texts (cached in {cache})", flush=True)
    start = time.perf_counter()
    label = _llm_logits(llm) if llm is not None else _minilm_logits(settings, task)
    for i in range(0, len(missing), 200):
        part = missing[i : i + 200]
        known.update(zip(part, label(part), strict=True))
        _save(cache, known)
        rate = (i + len(part)) / (time.perf_counter() - start)
        print(f"teacher: {i + len(part)}/{len(missing)} at {rate:.2f} texts/s", flush=True)
    return known


def _minilm_logits(settings: Settings, task: Task) -> Any:
    from models.embedding_teacher import ZeroShotTeacher

    cfg = settings.teacher
    path = teacher_model_path(cfg)
    return ZeroShotTeacher(path, task.prompts, cfg.temperature, cfg.max_tokens).logits


def _llm_logits(llm: Teacher) -> Any:
    def label(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 8):  # 8 to a call, as the labeler sends
            batch = llm.label(texts[i : i + 8])
            logits = np.log(np.clip(batch.probs, 1e-12, None))  # (B, C)
            logits[list(batch.unreadable)] = 0.0
            out.append(logits)
        return np.concatenate(out)

    return label


def _save(cache: Path, known: dict[str, np.ndarray]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.stem + ".partial.npz")
    np.savez(partial, texts=np.array(list(known)), logits=np.stack(list(known.values())))
    partial.replace(cache)


def train_config(settings: Settings, scratch: bool, seed: int) -> dict[str, Any]:
    """What ``training.round.fit`` reads, as ``run_round`` builds it for a round."""
    cfg = settings.train
    return {
        **cfg.model_dump(include={"kd_temperature", "kd_weight", "correction_weight"}),
        "batch_size": cfg.batch_size,
        "seed": seed,
        "epochs": cfg.scratch_epochs if scratch else cfg.epochs,
        "learning_rate": cfg.scratch_learning_rate if scratch else cfg.learning_rate,
        "max_tokens": settings.serve.max_tokens,
    }


def kd_frame(texts: list[str], logits: dict[str, np.ndarray]) -> pd.DataFrame:
    """Training rows in ``training.data`` form: teacher labels only (no corrections)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "text": texts,
            "teacher_logits": [logits[t] for t in texts],
            "correction": -1,
            "kd_weight": 1.0,
        }
    )


def _sha(body: object) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def weights_key(settings: Settings, split: Split) -> str:
    """What v1's weights depend on: the seed texts and the training settings."""
    return _sha(
        {
            "seed": [row.text for row in split.seed],
            "train": train_config(settings, True, settings.train.seed),
            "student": settings.student.model_dump(),
            "teacher": str(teacher_model_path(settings.teacher)),
        }
    )


def representation_key() -> str:
    """What the novelty reference depends on beyond the weights: how ``Student.predict`` pools
    an embedding and how ``models.novelty`` summarises them (their source code)."""
    from models import novelty
    from models.student import Student

    return _sha(
        {"predict": inspect.getsource(Student.predict), "novelty": inspect.getsource(novelty)}
    )


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def load_or_train_v1(
    settings: Settings, task: Task, split: Split, logits: dict, folder: Path
) -> Student:
    """v1 distilled from scratch on the seed movies, with its novelty reference; reused from
    ``folder`` when made from the same seed texts and settings (weights) and the same
    representation (reference)."""
    from models.student import Student

    weights_file, reference_file = folder / "bench_key.txt", folder / "reference_key.txt"
    key, ref_key = weights_key(settings, split), representation_key()
    if _read(weights_file) != key:
        reference_file.unlink(missing_ok=True)
        train_v1(settings, task, [row.text for row in split.seed], logits, folder)
        weights_file.write_text(key)
    if _read(reference_file) != ref_key:
        print("v1: fitting the novelty reference (new weights or representation)", flush=True)
        _fit_reference(folder, [row.text for row in split.seed], logits, settings)
        reference_file.write_text(ref_key)
    return Student.load(folder, settings.serve.max_tokens)


def train_v1(settings: Settings, task: Task, texts: list[str], logits: dict, folder: Path) -> None:
    """Distil v1 from scratch on ``texts`` and save it (without a novelty reference)."""
    import torch
    from transformers import AutoTokenizer

    from models.novelty import FILENAME
    from models.student import new_student
    from training.round import fit

    teacher_path = teacher_model_path(settings.teacher)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_path))
    cfg = train_config(settings, True, settings.train.seed)
    torch.manual_seed(cfg["seed"])
    model = new_student(
        task.label_names, settings.student, tokenizer.vocab_size, cfg["seed"], teacher_path
    )
    frame = kd_frame(texts, logits)
    start = time.perf_counter()
    history = fit(model, frame, tokenizer, cfg)
    print(f"v1: {len(frame)} rows, {time.perf_counter() - start:.0f}s, {history[-1]}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FILENAME).unlink(missing_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _fit_reference(folder: Path, texts: list[str], logits: dict, settings: Settings) -> None:
    """(Re)fit v1's novelty reference on its training texts, as ``run_round`` does."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from training.round import save_reference

    model = BertForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    save_reference(model, tokenizer, kd_frame(texts, logits), settings.serve.max_tokens, folder)


def retrain(
    settings: Settings,
    v1_dir: Path,
    texts: list[str],
    replay: list[str],
    logits: dict[str, np.ndarray],
    seed: int,
) -> Student:
    """v1's weights trained on ``texts`` plus as many ``replay`` texts drawn with ``seed``."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from models.student import Student
    from training.round import fit

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(v1_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(v1_dir))
    rows = texts + random.Random(seed).sample(replay, min(len(texts), len(replay)))
    fit(model, kd_frame(rows, logits), tokenizer, train_config(settings, False, seed))
    return Student(model, tokenizer, settings.serve.max_tokens)


def to_events(
    stream: list[VaderRow], probs: np.ndarray, novelty: np.ndarray
) -> list[SampledPrediction]:
    """The stream as v1 served it: probs (N, C), novelty (N,)."""
    from distillery.events import SampledPrediction

    return [
        SampledPrediction(
            request_id=f"s-{i:05d}",
            text=row.text,
            student_probs=[float(p) for p in probs[i]],
            model_version=1,
            novelty=float(novelty[i]),
        )
        for i, row in enumerate(stream)
    ]
