"""Drift on a generate task's prompts, measured: ``python -m bench.prompt_drift``.

The columns are the scheduler's for a generate task (``monitoring.drift_columns.PromptColumns``):
the prompts' text features and the principal components of the base student's input embeddings
(SmolLM2-135M-Instruct, dequantised from its GGUF: the loop's version 1), mean-pooled per prompt
(``models.prompt_embedding``). The prompts are what ``tasks/reply.yaml`` sends: its template over
VADER's texts. Window pairs, ``--rows`` each, drawn without replacement:

- **amazon vs amazon**: two disjoint halves of the reviews (no shift: a flag here is a false
  alarm);
- **amazon vs tweets** and **amazon vs movies**: the shifts a reply task meets.

Per pair: the drift share per kind (K-S per column at the scheduler's threshold, Evidently 0.7,
``monitoring.drift.drift_by_kind``), the largest of them (what the drift trigger compares with
``DISTILLERY_SCHEDULER_DRIFT_THRESHOLD``), and the seconds to embed and to test. Writes
``bench/results/prompt_drift.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, markdown_table, write_results
from distillery.settings import MonitorSettings

PAIRS = (("amazon", "amazon"), ("amazon", "tweets"), ("amazon", "movies"))


def windows(rows: int, data_dir: Path, seed: int) -> dict[tuple[str, str], tuple[list, list]]:
    """(reference texts, current texts) per pair; the same-domain pair splits one draw."""
    from distillery import vader

    rng = random.Random(seed)
    domains = sorted({d for pair in PAIRS for d in pair})  # sorted: a set's order varies by run
    texts = {d: [r.text for r in vader.load(d, data_dir)] for d in domains}
    for domain in domains:
        rng.shuffle(texts[domain])
    out = {}
    for ref, cur in PAIRS:
        if ref == cur:
            out[(ref, cur)] = (texts[ref][:rows], texts[ref][rows : 2 * rows])
        else:
            out[(ref, cur)] = (texts[ref][:rows], texts[cur][:rows])
    return out


def measure(
    embedder: Any, reference: list[str], current: list[str], monitor: MonitorSettings
) -> dict[str, Any]:
    from monitoring.drift import drift_by_kind, pinned_methods
    from monitoring.drift_columns import prompt_frames

    start = time.perf_counter()
    pooled = embedder.pooled(reference), embedder.pooled(current)
    embed_s = time.perf_counter() - start
    frames = prompt_frames((reference, current), pooled, monitor.pca_components)
    num, cat, threshold = pinned_methods(monitor.method, monitor.threshold, len(reference))
    start = time.perf_counter()
    results = drift_by_kind(*frames, num_method=num, cat_method=cat, threshold=threshold)
    share = {kind: round(r.drift_share, 3) for kind, r in results.items()}
    return {
        "share": share,
        "largest": max(share.values()),
        "drifted": {kind: list(r.drifted_columns) for kind, r in results.items()},
        "embed_s": round(embed_s, 2),
        "test_s": round(time.perf_counter() - start, 2),
    }


def base_embedder(data_dir: Path, folder: Path) -> Any:
    """The loop's version 1, saved as a version folder, read as the watch reads it."""
    from models.generator import Generator
    from models.gguf import student_gguf
    from models.prompt_embedding import PromptEmbedder

    Generator.from_gguf(student_gguf(data_dir)).save(folder)
    return PromptEmbedder.load(folder)


def table(result: dict[str, Any]) -> str:
    rows = [
        [f"{p['reference']} vs {p['current']}", p["share"]["features"], p["share"]["embedding"],
         p["largest"], "yes" if p["largest"] >= result["trigger_threshold"] else "no",
         p["embed_s"], p["test_s"]]
        for p in result["pairs"]
    ]  # fmt: skip
    header = ["prompts", "features drifted", "embedding drifted", "largest",
              f"drift trigger (≥ {result['trigger_threshold']})", "embed s", "test s"]  # fmt: skip
    note = (
        f"\n{result['rows']} prompts per window (`tasks/reply.yaml`'s template over VADER), "
        f"{result['k']} principal components, the base SmolLM2-135M's input embeddings.\n"
    )
    return markdown_table(header, rows) + note


def main(argv: list[str] | None = None) -> None:
    from distillery.settings import Settings
    from distillery.task import load_task

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = Settings()
    task = load_task(ROOT / "tasks" / "reply.yaml")
    assert task.generate is not None
    k = settings.monitor.pca_components
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        embedder = base_embedder(settings.paths.data_dir, Path(tmp) / "v1")
        for (ref, cur), (a, b) in windows(args.rows, settings.paths.data_dir, args.seed).items():
            prompts = [task.generate.prompt(t) for t in a], [task.generate.prompt(t) for t in b]
            measured = measure(embedder, *prompts, settings.monitor)
            print(f"{ref} vs {cur}: {measured['share']}")
            pairs.append({"reference": ref, "current": cur, **measured})
    result = {
        "rows": args.rows, "k": k, "seed": args.seed, "pairs": pairs,
        "trigger_threshold": settings.scheduler.drift_threshold,
    }  # fmt: skip
    json_path, _ = write_results("prompt_drift", result, table(result))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
