"""One home for Ray Train: a round's ``TorchTrainer``, its resources checked first and its fit
bounded in time. A classifier's round (``training.round``) and a generate task's
(``training.generate_round``) differ only in the loop each worker runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillery.settings import Settings


def train_on_ray(
    loop: Any, config: dict[str, Any], dataset: Any, settings: Settings, name: str
) -> tuple[Path, dict[str, float]]:
    """``loop`` on ``num_workers`` Ray Train workers over ``dataset``, bounded by
    ``round_timeout_s``; the final checkpoint's folder and its ``train_metrics.json``."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = settings.train
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        datasets={"train": dataset},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, resources_per_worker={"CPU": cfg.worker_cpus}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(settings.paths.train_dir / "ray"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    check_resources(cfg.num_workers * cfg.worker_cpus)
    result = _fit_with_timeout(trainer, cfg.round_timeout_s)
    if result.checkpoint is None:
        raise RuntimeError(f"round {name} ended without a checkpoint: {result.error}")
    path = Path(result.checkpoint.path)
    metrics = json.loads((path / "train_metrics.json").read_text())
    return path, {k: float(v) for k, v in metrics.items()}


def check_resources(cpus: float) -> None:
    """Fail fast: Ray Train waits forever for workers the cluster can never place."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    if total < cpus:
        raise RuntimeError(
            f"a round needs {cpus} CPU (num_workers × worker_cpus) but the cluster has {total}"
        )


def _fit_with_timeout(trainer: Any, timeout_s: float) -> Any:
    """``trainer.fit()`` bounded by ``timeout_s`` seconds (TimeoutError names the limit)."""
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    pool = ThreadPoolExecutor(1, thread_name_prefix="round")
    try:
        return pool.submit(trainer.fit).result(timeout=timeout_s)
    except FutureTimeout:
        raise TimeoutError(
            f"round did not finish in DISTILLERY_TRAIN_ROUND_TIMEOUT_S={timeout_s}s"
        ) from None
    finally:
        pool.shutdown(wait=False)
