"""What a replica's feedback-join cache holds in memory when it is full.

Each replica keeps the predictions it did not sample for ``join_window_s`` (an hour), at most
``unsampled_cache_size`` (50,000), so that feedback on one can still bring its text to the
teacher (``services.sampling.Sampler``). The hour-long soak saw each replica grow about 0.7 MB a
minute; this measures how much of that the cache is, and where it stops. It fills a real
``Sampler`` with the soak's own texts (none sampled) and reads the Python heap with
``tracemalloc``, beside the same events kept as pydantic models (how the cache held them before),
in the same run.

    .venv/bin/python -m bench.join_cache      # ~20 s; writes bench/results/join_cache.{json,md}
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bench.harness import markdown_table, texts, write_results
from distillery.events import SampledPrediction
from distillery.settings import Settings
from services.sampling import Policy, Sampler, TokenBucket


def _event(text: str) -> SampledPrediction:
    return SampledPrediction(
        request_id=str(uuid.uuid4()), text=text, student_probs=[0.31, 0.69], model_version=3,
        novelty=0.42,
    )  # fmt: skip


def heap_mib(fill: Callable[[], Any]) -> tuple[float, Any]:
    """MiB of Python heap that what ``fill`` builds still holds once built, and the thing."""
    gc.collect()
    tracemalloc.start()
    kept = fill()
    gc.collect()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return used / 2**20, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sent", type=int, default=80_000, help="predictions offered")
    args = parser.parse_args()
    settings = Settings()
    size = settings.serve.unsampled_cache_size
    bodies = texts(5_000, settings.paths.data_dir)

    def sampler() -> Sampler:
        never = Sampler(Policy(0.0, 0.0, float("inf")), TokenBucket(1e-9), cache_size=size)
        for i in range(args.sent):
            never.decide(_event(bodies[i % len(bodies)]))
        return never

    def models() -> OrderedDict[str, tuple[float, SampledPrediction]]:
        kept: OrderedDict[str, tuple[float, SampledPrediction]] = OrderedDict()
        for i in range(args.sent):
            event = _event(bodies[i % len(bodies)])
            kept[event.request_id] = (0.0, event)
            if len(kept) > size:
                kept.popitem(last=False)
        return kept

    as_bytes, full = heap_mib(sampler)
    as_models, _ = heap_mib(models)
    held = len(full._unsampled)
    rows = [
        ["pydantic models (before)", held, f"{as_models:.1f}", round(as_models * 2**20 / held)],
        ["encoded bytes (now)", held, f"{as_bytes:.1f}", round(as_bytes * 2**20 / held)],
    ]
    table = markdown_table(["cache holds events as", "events", "MiB", "bytes each"], rows)
    table += (
        f"\n{args.sent:,} predictions offered, none sampled; the cache keeps the newest "
        f"{size:,} (`DISTILLERY_SERVE_UNSAMPLED_CACHE_SIZE`). Bytes use "
        f"{as_models / as_bytes:.1f}× less heap.\n"
    )
    payload = {
        "sent": args.sent, "cache_size": size, "held": held,
        "mib": {"models": as_models, "bytes": as_bytes},
    }  # fmt: skip
    for path in write_results("join_cache", payload, table):
        print(path)
    print(table)


if __name__ == "__main__":
    main()
