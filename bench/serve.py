"""Serving speed against the physical limit, in one run: ``python -m bench.serve``.

1. Start a stack of its own (``state/bench-serve``, v1 distilled on first use), sampling off so
   the teacher does not compete for the two cores, and load it with ``wrk`` at 1, 16 and 64
   clients: throughput, p50/p99 latency, errors, and the batch size the server formed.
2. Stop it, then time the same student on the same texts with torch alone (one thread): batch
   1, 8 and 32 in one process, then one process per core at the batch size the server formed.
3. Targets (issue 18): served rps at 64 clients ≥ 0.6 × raw rps with a process per core; served
   p50 alone ≤ raw batch-1 p50 + 1 ms. Writes ``bench/results/serve.json`` and ``serve.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    NO_SAMPLING,
    bench_settings,
    markdown_table,
    run_wrk,
    scrape,
    texts,
    wait_measured,
    write_results,
)

LOADS = ((1, 1), (16, 1), (64, 1), (64, 8))  # (clients, texts per request)
RAW_BATCHES = (1, 8, 32)


@dataclass(frozen=True)
class Weights:
    """The served student: its folder and the token limit the replicas truncate to."""

    path: Path
    max_tokens: int

    def load(self, quantize: bool) -> Any:
        """On one torch thread, like a replica."""
        import torch

        from models.student import Student

        torch.set_num_threads(1)
        return Student.load(self.path, self.max_tokens, quantize=quantize)


def time_forward(
    weights: Weights, sample: list[str], batch: int, seconds: float, quantize: bool
) -> dict:
    """One thread: examples/s and per-call latency (ms) of ``predict_proba`` on ``batch`` texts."""
    student = weights.load(quantize)
    student.predict_proba(sample[:batch])  # warm
    calls: list[float] = []
    done, i = 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        chunk = [sample[(i + k) % len(sample)] for k in range(batch)]
        i += batch
        start = time.perf_counter()
        student.predict_proba(chunk)
        calls.append((time.perf_counter() - start) * 1000)
        done += batch
    total_s = sum(calls) / 1000
    return {
        "batch": batch,
        "examples_per_s": round(done / total_s, 1),
        "p50_ms": round(statistics.median(calls), 2),
    }


def _worker(args: tuple[Weights, list[str], int, float, bool]) -> dict:
    return time_forward(*args)


def parallel_forward(
    weights: Weights, sample: list[str], batch: int, seconds: float, procs: int, quantize: bool
) -> dict:
    """``procs`` processes at once, one thread each: summed examples/s."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        parts = pool.map(_worker, [(weights, sample, batch, seconds, quantize)] * procs)
    return {
        "batch": batch,
        "processes": procs,
        "examples_per_s": round(sum(p["examples_per_s"] for p in parts), 1),
    }


def agreement(weights: Weights, sample: list[str]) -> float:
    """Share of texts where the int8 student's label equals the fp32 student's."""
    fp32 = weights.load(False).predict_proba(sample).argmax(1)
    int8 = weights.load(True).predict_proba(sample).argmax(1)
    return float((fp32 == int8).mean())


def _batches(metrics_url: str, quiet_s: float = 11.0) -> tuple[float, float]:
    """(texts, batches) the replicas have run so far, once the figures have not moved for
    ``quiet_s`` (Ray exports each replica's metrics every 10 s)."""

    def now() -> tuple[float, float]:
        return scrape(metrics_url, "ray_distillery_predictions_total"), scrape(
            metrics_url, "ray_distillery_batches_total"
        )

    last, since = now(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(1)
        current = now()
        if current != last:
            last, since = current, time.monotonic()
    return last


def _bodies(folder: Path, sample: list[str], per_request: int) -> Path:
    """A JSON body a line, each with ``per_request`` texts (one text as a plain string)."""
    path = folder / f"bodies-{per_request}.jsonl"
    groups = [sample[i : i + per_request] for i in range(0, len(sample), per_request)]
    lines = [json.dumps({"text": g[0] if per_request == 1 else g}) for g in groups]
    path.write_text("\n".join(lines) + "\n")
    return path


def serve_phase(args: argparse.Namespace, sample: list[str]) -> tuple[dict, Weights]:
    from cli.launcher import up
    from training.registry import Registry

    settings = bench_settings(
        "serve",
        **NO_SAMPLING,
        num_replicas=args.replicas,
        replica_cpus=args.replica_cpus,
        max_batch_size=args.max_batch,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        quantize=args.quantize,
    )
    running = up(settings)
    try:
        wait_measured(running)
        url = f"{running.api_url}/v1/predict"
        run_wrk(url, _bodies(settings.paths.state_dir, sample, 1), 16, 5)  # warm up
        loads = []
        for clients, per_request in LOADS:
            bodies = _bodies(settings.paths.state_dir, sample, per_request)
            before = _batches(running.metrics_url)
            result = run_wrk(url, bodies, clients, args.seconds).row()
            after = _batches(running.metrics_url)
            count = after[1] - before[1]
            result["mean_batch"] = round((after[0] - before[0]) / count, 1) if count else None
            result["texts_per_request"] = per_request
            result["texts_per_s"] = round(result["rps"] * per_request, 1)
            loads.append(result)
            print(json.dumps(result))
        registry = Registry(settings.paths.model_store_url())
        version = registry.current()
        assert version is not None
        config = settings.serve.model_dump(exclude={"feedback_secret", "operator_token"})
        local = registry.local_dir(version, settings.paths.model_cache_path())
        weights = Weights(local, settings.serve.max_tokens)
        return {"served": loads, "serve_config": config, "version": version}, weights
    finally:
        running.stop()


def raw_phase(weights: Weights, sample: list[str], formed_batch: int, seconds: float) -> dict:
    raw = [time_forward(weights, sample, b, seconds, False) for b in RAW_BATCHES]
    procs = os.cpu_count() or 1
    per_core = parallel_forward(weights, sample, formed_batch, seconds, procs, False)
    int8 = [time_forward(weights, sample, b, seconds, True) for b in RAW_BATCHES]
    int8_per_core = parallel_forward(weights, sample, formed_batch, seconds, procs, True)
    return {
        "fp32": raw,
        "fp32_per_core": per_core,
        "int8": int8,
        "int8_per_core": int8_per_core,
        "int8_agreement": round(agreement(weights, sample), 4),
    }


THROUGHPUT_TARGET = 0.6  # × raw, at 64 clients
LATENCY_SLACK_MS = 1.0  # over raw batch-1 p50, alone


def verdict(result: dict, quantize: bool) -> dict:
    served = {row["clients"]: row for row in result["served"] if row["texts_per_request"] == 1}
    kind = "int8" if quantize else "fp32"
    raw_rps = result["raw"][f"{kind}_per_core"]["examples_per_s"]
    raw_b1 = next(r for r in result["raw"][kind] if r["batch"] == 1)["p50_ms"]
    return {
        "throughput_ratio_64": round(served[64]["rps"] / raw_rps, 3),
        "throughput_target": THROUGHPUT_TARGET,
        "p50_alone_ms": served[1]["p50_ms"],
        "p50_alone_limit_ms": round(raw_b1 + LATENCY_SLACK_MS, 2),
        "throughput_met": served[64]["rps"] >= THROUGHPUT_TARGET * raw_rps,
        "latency_met": served[1]["p50_ms"] <= raw_b1 + LATENCY_SLACK_MS,
        "int8_kept": result["raw"]["int8_agreement"] >= 0.995,
    }


def table(result: dict) -> str:
    raw = result["raw"]
    rows: list[list[Any]] = [
        [f"torch {kind}, batch {r['batch']}", 1, r["examples_per_s"], r["p50_ms"], "", "", ""]
        for kind in ("fp32", "int8")
        for r in raw[kind]
    ]
    for kind in ("fp32", "int8"):
        pc = raw[f"{kind}_per_core"]
        rows.append(
            [f"torch {kind}, batch {pc['batch']}", pc["processes"], pc["examples_per_s"],
             "", "", "", ""]
        )  # fmt: skip
    for s in result["served"]:
        what = f"served, {s['clients']} clients"
        if s["texts_per_request"] > 1:
            what += f" × {s['texts_per_request']} texts"
        rows.append(
            [what, "", s["texts_per_s"], s["p50_ms"], s["p99_ms"], s["errors"], s["mean_batch"]]
        )
    header = ["what", "processes", "texts/s", "p50 ms", "p99 ms", "errors", "mean batch"]
    v = result["verdict"]
    return markdown_table(header, rows) + (
        f"\nServed/raw throughput at 64 clients: {v['throughput_ratio_64']} "
        f"(target ≥ {v['throughput_target']}); "
        f"p50 alone {v['p50_alone_ms']} ms (limit {v['p50_alone_limit_ms']} ms); "
        f"int8 agreement with fp32 {raw['int8_agreement']:.2%}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15, help="per load level")
    parser.add_argument("--raw-seconds", type=float, default=6, help="per raw measurement")
    parser.add_argument("--replicas", type=int, default=None)
    parser.add_argument("--replica-cpus", type=float, default=None)
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--batch-wait-ms", type=float, default=None)
    parser.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--name", default="serve", help="results file name")
    parser.add_argument("--skip-raw", action="store_true", help="served figures only (tuning)")
    args = parser.parse_args()
    from distillery.settings import PathSettings, ServeSettings

    defaults = ServeSettings()
    for field, attr in [("num_replicas", "replicas"), ("replica_cpus", "replica_cpus"),
                        ("max_batch_size", "max_batch"), ("quantize", "quantize")]:  # fmt: skip
        if getattr(args, attr) is None:
            setattr(args, attr, getattr(defaults, field))
    if args.batch_wait_ms is None:
        args.batch_wait_ms = defaults.batch_wait_timeout_s * 1000
    sample = texts(512, PathSettings().data_dir)
    result, weights = serve_phase(args, sample)
    if args.skip_raw:
        print(json.dumps(result["served"]))
        return
    formed = max(1, round(result["served"][2]["mean_batch"] or 1))  # 64 clients, 1 text
    result["raw"] = raw_phase(weights, sample, formed, args.raw_seconds)
    result["verdict"] = verdict(result, args.quantize)
    json_path, _ = write_results(args.name, result, table(result))
    print(table(result))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
