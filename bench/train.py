"""Distillation throughput per Ray Train worker: ``python -m bench.train`` (``make bench-train``).

A round as the scheduler runs it (``training.round.run_round``: TorchTrainer, fine-tuning the
parent for ``train.epochs``), on ``rows`` teacher-labelled VADER sentences, with 1 worker and
with 2 workers at fractional CPUs (one torch thread each) on this machine's local Ray. Per
configuration: examples/s while training (all workers; the workers' own clocks, so Ray's start
and the checkpoint upload are left out) and the round's wall time end to end.

The parent and teacher labels are the sampling benchmark's (``state/bench-sampling``: v1 and the
teacher cache, made on first use). Writes ``bench/results/train.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.harness import ROOT, markdown_table, write_results

CONFIGS = ((1, 0.5), (2, 0.5))  # (workers, CPUs each)


def round_rows(n: int) -> Any:
    """``n`` teacher-labelled rows in ``training.data`` form, and the parent folder."""
    from bench.sampling_data import STATE, kd_frame, load_or_train_v1, load_split, teacher_logits
    from distillery.settings import Settings
    from distillery.task import load_task

    settings = Settings()
    task = load_task(settings.paths.task_file)
    split = load_split(settings.paths.data_dir, 1_600, 800, 3_000, 0.4)
    texts = [row.text for row in split.stream][:n]
    logits = teacher_logits(
        [r.text for r in split.seed] + texts, STATE / "teacher.npz", settings, task
    )
    load_or_train_v1(settings, task, split, logits, STATE / "v1")
    return kd_frame(texts, logits), STATE / "v1"


def one_round(frame: Any, parent: Any, workers: int, cpus: float, epochs: int) -> dict[str, Any]:
    from distillery.settings import PathSettings, Settings, TrainSettings
    from distillery.task import load_task
    from training.data import RoundData
    from training.registry import Lineage
    from training.round import run_round

    settings = Settings(
        paths=PathSettings(state_dir=ROOT / "state" / "bench-train"),
        train=TrainSettings(num_workers=workers, worker_cpus=cpus, epochs=epochs, max_failures=0),
    )
    task = load_task(settings.paths.task_file)
    data = RoundData(frame, frame[:0], frame[:0], Lineage())
    start = time.perf_counter()
    _, metrics = run_round(settings, task, data, parent, f"bench-{workers}x{cpus}-{time.time_ns()}")
    wall = time.perf_counter() - start
    return {
        "workers": workers,
        "cpus_per_worker": cpus,
        "rows": len(frame),
        "epochs": epochs,
        "examples_per_s": round(metrics["examples_per_s"] * workers, 1),  # rank 0's shard × N
        "examples_per_s_per_worker": round(metrics["examples_per_s"], 1),
        "round_wall_s": round(wall, 1),
        "loss": round(metrics["loss"], 4),
    }


def render(result: dict[str, Any]) -> str:
    rows = [
        [r["workers"], r["cpus_per_worker"], r["rows"], r["epochs"], r["examples_per_s"],
         r["examples_per_s_per_worker"], r["round_wall_s"]]
        for r in result["runs"]
    ]  # fmt: skip
    header = ["workers", "CPU each", "rows", "epochs", "examples/s", "per worker", "round wall s"]
    note = (
        f"\nRay Train on this machine ({result['cpus']} CPUs), one torch thread per worker; "
        "examples/s from the workers' own clocks.\n"
    )
    return markdown_table(header, rows) + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    import os

    import ray

    frame, parent = round_rows(args.rows)
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        runs = []
        for workers, each in CONFIGS:
            runs.append(one_round(frame, parent, workers, each, args.epochs))
            print(runs[-1], flush=True)
    finally:
        ray.shutdown()
    result = {"cpus": cpus, "runs": runs}
    table = render(result)
    json_path, _ = write_results("train", result, table)
    print(table)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
