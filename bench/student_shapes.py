"""What limits the online student on a phase: its data or its shape?

Reads the example store a finished ``make bench-drift`` left (``state/bench-drift-<teacher>``),
takes one phase's teacher-labelled traffic (nyt by default) and trains, offline and from scratch,
one student per shape on the same rows: the phase's training rows plus as many replayed older
rows (the online rounds' mix), and the whole phase at once rather than round by round. Per shape:
accuracy against the human labels of every domain's held-out texts (the drift benchmark's), the
agreement with the teacher on the phase's held-out labelled rows, training examples/s and the p50
one-text latency. If every shape tops out near the online student, the limit is the student's
capacity, not the rounds' data. Writes ``bench/results/student_shapes.{json,md}``.

    python -m bench.student_shapes [--teacher minilm] [--domain nyt]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.harness import ROOT, markdown_table, write_results
from distillery import vader
from distillery.settings import PathSettings, Settings, StudentSettings, TeacherSettings
from models.weights import teacher_model_path

SHAPES: dict[str, dict[str, Any]] = {  # name → StudentSettings fields, epochs, learning rate
    "teacher embeddings by PCA (default)": {"shape": {}, "epochs": 4, "lr": 1e-3},
    "teacher's first layer": {
        "shape": {"init": "teacher_layers", "layers": 1}, "epochs": 3, "lr": 1e-4,
    },
    "teacher's first two layers": {
        "shape": {"init": "teacher_layers", "layers": 2}, "epochs": 3, "lr": 1e-4,
    },
}  # fmt: skip


@dataclass
class ShapeResult:
    shape: str
    params_m: float  # parameters, millions
    accuracy: dict[str, float]  # domain → accuracy on its held-out texts' human labels
    teacher_agreement: float  # on the phase's held-out teacher-labelled rows
    examples_per_s: float  # training, this process, 2 torch threads
    p50_ms: float  # one text at a time, one torch thread


def phase_rows(settings: Settings, domain: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, held out, older) labelled rows: the phase's own split as the rounds made it, and
    the non-held rows stored before the phase began (the replay pool)."""
    from distillery.task import load_task
    from feedback.examples import join, read_kind, read_labels
    from training.data import held_out, newest_per_text

    store = settings.paths.store_dir
    task = load_task(settings.paths.task_file)
    labels = read_labels(store)
    texts = {row.text for row in vader.load(domain, settings.paths.data_dir)}
    if labels.empty or not labels["text"].isin(texts).any():
        raise SystemExit(f"no {domain} labels in {store}: run `make bench-drift` first")
    rows = join(labels, read_kind(store, "feedback"), task).sort_values("ts")
    phase = rows[rows["text"].isin(texts)]
    fraction = settings.train.holdout_fraction
    held = held_out(phase, fraction)
    before = rows[rows["ts"] < phase["ts"].min()]
    older = before[~held_out(before, fraction)]
    return phase[~held], newest_per_text(phase[held]), older


def p50_ms(model: Any, tokenizer: Any, texts: list[str]) -> float:
    import torch

    times = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer([text], truncation=True, max_length=128, return_tensors="pt")
            start = time.perf_counter()
            model(**enc)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_shape(
    name: str, spec: dict[str, Any], frame: pd.DataFrame, held: pd.DataFrame,
    evals: dict[str, list[vader.VaderRow]], settings: Settings, tokenizer: Any,
) -> ShapeResult:  # fmt: skip
    import torch

    from bench.drift_recovery import student_accuracy
    from distillery.task import load_task
    from models.student import Student, new_student
    from training.round import fit

    names = load_task(settings.paths.task_file).label_names
    shape = StudentSettings(**spec["shape"])
    teacher_dir = teacher_model_path(settings.teacher)
    model = new_student(names, shape, tokenizer.vocab_size, 0, teacher_dir)
    config = {
        **settings.train.model_dump(include={"kd_temperature", "kd_weight", "correction_weight"}),
        "batch_size": settings.train.batch_size, "seed": 0, "epochs": spec["epochs"],
        "learning_rate": spec["lr"], "max_tokens": settings.serve.max_tokens,
    }  # fmt: skip
    torch.set_num_threads(2)
    history = fit(model, frame, tokenizer, config)
    student = Student(model, tokenizer, settings.serve.max_tokens)  # eval mode
    accuracy = {d: student_accuracy(student, rows) for d, rows in evals.items()}
    teacher = np.array([int(np.argmax(x)) for x in held["teacher_logits"]])
    agreement = float(np.mean(student.predict_proba(list(held["text"])).argmax(1) == teacher))
    torch.set_num_threads(1)
    latency = p50_ms(model, tokenizer, list(held["text"])[:100])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    name = f"{model.config.num_hidden_layers}×{model.config.hidden_size}, {name}"
    rate = float(history[-1]["examples_per_s"])
    print(f"{name}: {accuracy} agreement {agreement:.3f} {rate:.0f} ex/s p50 {latency:.2f} ms")
    return ShapeResult(name, round(params, 1), accuracy, agreement, rate, latency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", choices=["minilm", "mpnet"], default="minilm")
    parser.add_argument("--domain", choices=list(vader.DOMAINS), default="nyt")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from bench.drift_recovery import seed_texts, split

    state = ROOT / "state" / f"bench-drift-{args.teacher}"  # students start from its teacher
    settings = Settings(
        paths=PathSettings(state_dir=state), teacher=TeacherSettings(model=args.teacher)
    )
    train, held, older = phase_rows(settings, args.domain)
    frame = pd.concat([train, older.sample(n=min(len(older), len(train)), random_state=0)])
    frame = frame.assign(kd_weight=1.0).reset_index(drop=True)
    seeds = seed_texts(settings)
    evals = {d: split(d, settings.paths.data_dir, 400, 2400, seeds)[0] for d in vader.DOMAINS}
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_model_path(settings.teacher)))
    results = [
        measure_shape(name, spec, frame, held, evals, settings, tokenizer)
        for name, spec in SHAPES.items()
    ]
    write(args, len(train), len(frame) - len(train), len(held), results)


def write(
    args: argparse.Namespace, n_train: int, n_replay: int, n_held: int, results: list[ShapeResult]
) -> None:
    agreement = f"agreement with the teacher ({args.domain})"
    header = ["student", "params (M)", *vader.DOMAINS, agreement, "train ex/s", "p50 ms"]
    rows = [
        [r.shape, r.params_m, *(f"{r.accuracy[d]:.3f}" for d in vader.DOMAINS),
         f"{r.teacher_agreement:.3f}", f"{r.examples_per_s:.0f}", f"{r.p50_ms:.2f}"]
        for r in results
    ]  # fmt: skip
    note = (
        f"\nTrained from scratch on {n_train} {args.domain} rows labelled by the {args.teacher} "
        f"teacher plus {n_replay} replayed older rows; agreement on {n_held} held-out "
        f"{args.domain} rows; accuracy against the human labels of each domain's 400 "
        "held-out texts.\n"
    )
    payload = {
        "settings": vars(args), "train_rows": n_train, "replay_rows": n_replay,
        "held_rows": n_held, "results": [asdict(r) for r in results],
    }  # fmt: skip
    suffix = "" if args.teacher == "minilm" else f"_{args.teacher}"
    paths = write_results(f"student_shapes{suffix}", payload, markdown_table(header, rows) + note)
    print(*paths)


if __name__ == "__main__":
    main()
