"""Which embedding-drift method to run, measured: ``python -m bench.drift_methods``.

The student is v1 of the sampling benchmark (distilled on 1,600 VADER movie sentences, cached in
``state/bench-sampling/v1``). Its pooled embeddings (``Student.predict``) of two window pairs:

- **movies vs movies**: two disjoint halves of the unseen movie sentences (no drift: a method
  that flags it raises false alarms);
- **movies vs tweets**: unseen movies against tweets (the shift the loop must notice).

At 1,000 rows per window, then 10,000 (drawn with replacement: VADER has 10k movie sentences
and 3.4k tweets). Methods:

- ``pca+ks`` (our choice, ``monitoring.features.embedding_components`` then Evidently's
  per-column K-S): share of the first ``k`` principal components that drifted;
- ``pca+wasserstein``: the same with Evidently's normed Wasserstein distance;
- Evidently 0.7's ``EmbeddingsDrift`` with its ``model`` (domain classifier ROC AUC), ``mmd``
  and ``ratio`` methods, at 1,000 rows only: the metric always fits a t-SNE for its plot, which
  dominates its time and grows faster than linearly.
- ``all kinds``: what the scheduler runs each check with the default ``MonitorSettings``
  (text features + embedding components + prediction columns, one Evidently run), with and
  without saving the HTML report.

Writes ``bench/results/drift_methods.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.harness import write_results

PCA_K = 5


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 3)


def pca_method(num_method: str, threshold: float) -> Callable[[np.ndarray, np.ndarray], Any]:
    from monitoring.drift import data_drift
    from monitoring.features import embedding_components

    def run(reference: np.ndarray, current: np.ndarray) -> dict[str, Any]:
        ref, cur = embedding_components(reference, current, PCA_K)
        result = data_drift(ref, cur, num_method=num_method, threshold=threshold)
        return {"score": result.drift_share, "drift": result.drift_share >= 0.5}

    return run


def evidently_method(name: str) -> Callable[[np.ndarray, np.ndarray], Any]:
    def run(reference: np.ndarray, current: np.ndarray) -> dict[str, Any]:
        from evidently import DataDefinition, Dataset, Report
        from evidently.legacy.metrics.data_drift import embedding_drift_methods as methods
        from evidently.metrics import EmbeddingsDrift

        columns = [f"e{i}" for i in range(reference.shape[1])]
        definition = DataDefinition(numerical_columns=columns, embeddings={"student": columns})
        method = getattr(methods, name)()
        report = Report([EmbeddingsDrift(embeddings_name="student", drift_method=method)])
        frames = [pd.DataFrame(x, columns=columns) for x in (current, reference)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snapshot = report.run(
                *(Dataset.from_pandas(f, data_definition=definition) for f in frames)
            )
        score = float(snapshot.dict()["metrics"][0]["value"])
        return {"score": score, "drift": score >= method.threshold}

    return run


def windows(n: int, pools: dict[str, np.ndarray], seed: int) -> dict[str, tuple[Any, Any]]:
    """Row indices of both pairs at ``n`` rows a window (with replacement past a pool's size)."""
    rng = np.random.default_rng(seed)
    half = len(pools["movies"]) // 2

    def draw(low: int, high: int) -> np.ndarray:
        return rng.choice(np.arange(low, high), n, replace=n > high - low)

    tweets = len(pools["tweets"])
    return {
        "movies vs movies": (("movies", draw(0, half)), ("movies", draw(half, 2 * half))),
        "movies vs tweets": (("movies", draw(0, half)), ("tweets", draw(0, tweets))),
    }


def all_kinds(texts: dict[str, list[str]], probs: dict[str, np.ndarray], pools: dict) -> Any:
    """A callable timing what the scheduler runs on one pair: (reference, current) picks."""
    from distillery.settings import MonitorSettings
    from monitoring.drift import drift_by_kind, pinned_methods
    from monitoring.features import embedding_components, prediction_features, text_features

    def frame(pick: tuple[str, np.ndarray], pcs: pd.DataFrame) -> pd.DataFrame:
        domain, rows = pick
        parts = [
            text_features([texts[domain][i] for i in rows]),
            pcs.reset_index(drop=True),
            prediction_features(probs[domain][rows], ["negative", "positive"]),
        ]
        return pd.concat(parts, axis=1)

    def run(
        ref: tuple[str, np.ndarray],
        cur: tuple[str, np.ndarray],
        html: Path | None,
        method: str | None = None,
        limit: float | None = None,
    ) -> Any:
        pcs = embedding_components(pools[ref[0]][ref[1]], pools[cur[0]][cur[1]], PCA_K)
        cfg = MonitorSettings()
        chosen = (method or cfg.method, cfg.threshold if limit is None else limit)
        num, cat, threshold = pinned_methods(*chosen, len(ref[1]))
        result = drift_by_kind(
            frame(ref, pcs[0]), frame(cur, pcs[1]), num_method=num, cat_method=cat,
            threshold=threshold, html=html,
        )  # fmt: skip
        return {kind: round(r.drift_share, 3) for kind, r in result.items()}

    return run


CALIBRATION = {
    "K-S p < 0.01": ("ks", 0.01),
    "Wasserstein ≥ 0.1": ("wasserstein", 0.1),
    "Wasserstein ≥ 0.15": ("wasserstein", 0.15),
    "auto (the default)": ("auto", 0.0),
}


def calibrate(kinds: Any, pools: dict, sizes: list[int], draws: int) -> list[dict[str, Any]]:
    """Per window size, draw and method: the largest share of drifted columns over the three
    kinds, for movies vs movies (a false alarm at the drift trigger's threshold) and movies vs
    tweets."""
    rows = []
    for n in sizes:
        for draw in range(draws):
            for pair, (ref, cur) in windows(n, pools, 100 + draw).items():
                for name, (method, limit) in CALIBRATION.items():
                    shares = kinds(ref, cur, None, method, limit)
                    rows.append(
                        {"rows": n, "draw": draw, "pair": pair, "method": name,
                         "max_share": max(shares.values()), "share": shares}
                    )  # fmt: skip
        print(f"calibration at {n} rows done", flush=True)
    return rows


def calibration_table(rows: list[dict[str, Any]]) -> str:
    """Draws whose largest drifted share reaches the drift trigger's default threshold."""
    from distillery.settings import SchedulerSettings

    fire = SchedulerSettings().drift_threshold
    lines = [
        f"| rows/window | method | movies vs movies: draws ≥ {fire} (mean) "
        f"| movies vs tweets: draws ≥ {fire} (min–max) |",
        "|---:|---|---|---|",
    ]
    keys = dict.fromkeys((r["rows"], r["method"]) for r in rows)
    for n, method in keys:
        mine = [r for r in rows if (r["rows"], r["method"]) == (n, method)]
        same = [r["max_share"] for r in mine if r["pair"] == "movies vs movies"]
        shift = [r["max_share"] for r in mine if r["pair"] == "movies vs tweets"]
        lines.append(
            f"| {n} | {method} | {sum(v >= fire for v in same)}/{len(same)} "
            f"({np.mean(same):.2f}) | {sum(v >= fire for v in shift)}/{len(shift)} "
            f"({min(shift):.2f}–{max(shift):.2f}) |"
        )
    return "\n".join(lines) + "\n"


def measure(sizes: list[int], seed: int) -> dict[str, Any]:
    from bench.sampling_data import STATE, load_or_train_v1, load_split, teacher_logits
    from distillery import vader
    from distillery.settings import Settings
    from distillery.task import load_task

    settings = Settings()
    task = load_task(settings.paths.task_file)
    split = load_split(settings.paths.data_dir, 1_600, 800, 3_000, 0.4)
    logits = teacher_logits([r.text for r in split.seed], STATE / "teacher.npz", settings, task)
    v1 = load_or_train_v1(settings, task, split, logits, STATE / "v1")
    seen = {r.text for r in split.seed}
    texts = {
        d: [r.text for r in vader.load(d, settings.paths.data_dir) if r.text not in seen]
        for d in ("movies", "tweets")
    }
    for domain in texts:
        random.Random(seed).shuffle(texts[domain])
    (encoded, embed_s) = _timed(lambda: {d: v1.predict(t) for d, t in texts.items()})
    probs = {d: encoded[d][0] for d in texts}
    pools = {d: encoded[d][1] for d in texts}  # (N, H) each
    methods = {
        "pca+ks": pca_method("ks", 0.01),
        "pca+wasserstein": pca_method("wasserstein", 0.1),
        "evidently model": evidently_method("model"),
        "evidently mmd": evidently_method("mmd"),
        "evidently ratio": evidently_method("ratio"),
    }
    rows = []
    kinds = all_kinds(texts, probs, pools)
    for n in sizes:
        for pair, (ref, cur) in windows(n, pools, seed).items():
            for name, method in methods.items():
                if name.startswith("evidently") and n > 1_000:
                    continue
                a, b = pools[ref[0]][ref[1]], pools[cur[0]][cur[1]]
                out, seconds = _timed(functools.partial(method, a, b))
                rows.append({"rows": n, "pair": pair, "method": name, **out, "seconds": seconds})
                print(rows[-1], flush=True)
            shares, seconds = _timed(functools.partial(kinds, ref, cur, None))
            with tempfile.TemporaryDirectory() as tmp:
                html = Path(tmp) / "report.html"
                _, html_s = _timed(functools.partial(kinds, ref, cur, html))
                size = html.stat().st_size
            rows.append(
                {"rows": n, "pair": pair, "method": "all kinds", "score": shares,
                 "seconds": seconds, "html_seconds": html_s, "html_bytes": size}
            )  # fmt: skip
            print(rows[-1], flush=True)
    calibration = calibrate(kinds, pools, [300, 1_000, 3_000], draws=5)
    return {
        "student": "bench-sampling v1 (distilled on 1,600 movie sentences)",
        "calibration": calibration,
        "pca_components": PCA_K,
        "embed_seconds": {"texts": sum(len(t) for t in texts.values()), "seconds": embed_s},
        "rows": rows,
    }


def render(result: dict[str, Any]) -> str:
    return (
        timing_table(result)
        + "\nCalibration (5 draws a size):\n\n"
        + calibration_table(result["calibration"])
    )


def timing_table(result: dict[str, Any]) -> str:
    lines = [
        "| rows/window | pair | method | score | drift? | seconds |",
        "|---:|---|---|---|---|---:|",
    ]
    for r in result["rows"]:
        score = r["score"]
        shown = (
            ", ".join(f"{k} {v:.2f}" for k, v in score.items())
            if isinstance(score, dict)
            else f"{score:.3f}"
        )
        drift = "" if "drift" not in r else ("yes" if r["drift"] else "no")
        secs = f"{r['seconds']:.2f}"
        if "html_seconds" in r:
            secs += f" ({r['html_seconds']:.2f} with a {r['html_bytes'] / 1e6:.1f} MB HTML)"
        lines.append(f"| {r['rows']} | {r['pair']} | {r['method']} | {shown} | {drift} | {secs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", action="store_true", help="only re-render the saved JSON")
    args = parser.parse_args()
    if args.render:
        from bench.harness import RESULTS

        saved = json.loads((RESULTS / "drift_methods.json").read_text())
        write_results("drift_methods", saved, render(saved))
        print(render(saved))
        return
    import torch

    torch.set_num_threads(2)
    result = measure(args.sizes, args.seed)
    table = render(result)
    json_path, _ = write_results("drift_methods", result, table)
    print(table)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
