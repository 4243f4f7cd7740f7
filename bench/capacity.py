"""The capacity table of ``docs/scaling.md``, from the benchmarks' own results.

``python -m bench.capacity`` (``make capacity``) reads ``bench/results/{serve,labeler,train}.json``
(written by ``make bench-serve``, ``bench-labeler``, ``bench-train``) and rewrites the table
between the ``capacity`` markers of ``docs/scaling.md``. A unit test checks the page holds exactly
what this renders from the committed results, so the page cannot drift from the measurements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, ROOT, between_markers, markdown_table

PAGE = ROOT / "docs" / "scaling.md"
START, END = "<!-- capacity:start -->", "<!-- capacity:end -->"


def load(results: Path = RESULTS) -> dict[str, Any]:
    return {
        name: json.loads((results / f"{name}.json").read_text())
        for name in ("serve", "labeler", "train")
    }


def rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per component: what one unit of it sustains here, and what it is sized by."""
    serve, labeler, train = results["serve"], results["labeler"], results["train"]
    replicas = serve["serve_config"]["num_replicas"]
    busiest = max(serve["served"], key=lambda r: r["texts_per_s"])
    single = next(r for r in serve["served"] if r["clients"] == 1)
    raw = max(serve["raw"]["fp32"], key=lambda r: r["examples_per_s"])
    runs = {r["workers"]: r for r in train["runs"]}
    one, most = runs[min(runs)], runs[max(runs)]
    return [
        [
            "Serve replica (student, @serve.batch)",
            f"{busiest['texts_per_s'] / replicas:.0f} texts/s",
            f"{replicas} replicas: {busiest['texts_per_s']:.0f} texts/s at {busiest['clients']} "
            f"clients × {busiest['texts_per_request']} texts, p99 {busiest['p99_ms']:.0f} ms; "
            f"1 client: p50 {single['p50_ms']:.1f} ms",
            "request rate (texts/s)",
        ],
        [
            "student forward, no HTTP (1 process)",
            f"{raw['examples_per_s']:.0f} texts/s",
            f"batch {raw['batch']}, p50 {raw['p50_ms']:.1f} ms a batch",
            "the ceiling a replica's CPU share gives",
        ],
        [
            "teacher labeler (MiniLM, 1 torch thread)",
            f"{labeler['labeler_per_s']:.0f} labels/s",
            f"teacher alone {labeler['raw_teacher_per_s']:.0f} texts/s; lag p99 "
            f"{labeler['lag_s']['p99_s']:.1f} s at {labeler['steady_rate_per_s']:.0f} events/s",
            "sampled texts/s (teacher budget); one consumer per partition at most",
        ],
        [
            "Ray Train worker (1 torch thread)",
            f"{one['examples_per_s_per_worker']:.0f} examples/s",
            f"{one['workers']} worker: {one['examples_per_s']:.0f} examples/s, round "
            f"{one['round_wall_s']:.0f} s; {most['workers']} workers: "
            f"{most['examples_per_s']:.0f} examples/s, round {most['round_wall_s']:.0f} s "
            f"({one['rows']} rows × {one['epochs']} epochs)",
            "round size (window + replay rows × epochs) / the round time you accept",
        ],
    ]


def render(results: dict[str, Any]) -> str:
    header = ["component", "one unit sustains", "measured here (2 CPUs)", "scale it with"]
    return markdown_table(header, rows(results))


def rewrite(page: str, table: str) -> str:
    """``page`` with the text between the capacity markers replaced by ``table``."""
    return between_markers(page, "capacity", table)


def main() -> None:
    table = render(load())
    PAGE.write_text(rewrite(PAGE.read_text(), table))
    print(table)
    print(f"wrote the table into {PAGE}")


if __name__ == "__main__":
    main()
