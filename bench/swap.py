"""Hot swap under load, in one run: ``python -m bench.swap``.

32 clients POST ``/v1/predict`` back to back while three new versions are promoted one after
another (``Scheduler.promote``: registry, then a config deploy that changes only ``user_config``,
then wait until every replica answers with it). Counts failed requests (goal 0), the longest
latency against the calm baseline, throughput during swaps against calm, and checks every answer's
``model_version`` against the registry's history: an answer may carry a version only between its
promotion and the end of the swap that replaced it. Writes ``bench/results/swap.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    NO_SAMPLING,
    bench_settings,
    markdown_table,
    texts,
    wait_measured,
    write_results,
)

Answer = tuple[float, float, int, int | None]  # (start, end) wall s, HTTP status, model_version


async def _client(session: Any, url: str, bodies: list[str], offset: int, until: float) -> list:
    out: list[Answer] = []
    i = offset
    while time.time() < until:
        start = time.time()
        try:
            async with session.post(url, data=bodies[i % len(bodies)]) as resp:
                payload = await resp.read()
                version = json.loads(payload)["predictions"][0]["model_version"]
                out.append((start, time.time(), resp.status, version if resp.ok else None))
        except Exception:
            out.append((start, time.time(), 0, None))
        i += 1
    return out


async def _hammer(url: str, bodies: list[str], clients: int, seconds: float) -> list[Answer]:
    import aiohttp

    until = time.time() + seconds
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        parts = await asyncio.gather(
            *(_client(session, url, bodies, k * 7, until) for k in range(clients))
        )
    return [answer for part in parts for answer in part]


def hammer(url: str, bodies: list[str], clients: int, seconds: float, out: Path) -> None:
    """In its own process: ``clients`` back-to-back clients for ``seconds``; answers to ``out``."""
    out.write_text(json.dumps(asyncio.run(_hammer(url, bodies, clients, seconds))))


def copies(registry: Any, n: int, cache_dir: Path) -> list[int]:
    """Register ``n`` candidates made from the current version's weights (lineage: parent);
    ``cache_dir``: where a remote store's current version is copied to first."""
    from training.registry import VersionMeta

    current = registry.current()
    source = registry.get(current)
    made = []
    for _ in range(n):
        lineage = source.lineage.model_copy(update={"parent": current})
        meta = VersionMeta(version=0, lineage=lineage, config={"bench": "swap copy"})
        made.append(registry.register(registry.local_dir(current, cache_dir), meta).version)
    return made


def windows(history: list[dict], swaps: list[dict]) -> dict[int, tuple[float, float]]:
    """version → (promoted at, end of the swap that replaced it; inf if still current)."""
    promoted = {h["version"]: h["ts"] for h in history if h["event"] == "promoted"}
    replaced_at: dict[int, float] = {}
    ordered = sorted(promoted, key=lambda v: promoted[v])
    for old, new in itertools.pairwise(ordered):
        done = next((s["swapped_at"] for s in swaps if s["version"] == new), promoted[new])
        replaced_at[old] = done
    return {v: (promoted[v], replaced_at.get(v, float("inf"))) for v in promoted}


def check(answers: list[Answer], allowed: dict[int, tuple[float, float]]) -> list[Answer]:
    """Answers whose version was not being served by the registry's account at that moment."""
    bad: list[Answer] = []
    for start, end, status, version in answers:
        if status != 200 or version is None:
            continue
        window = allowed.get(version)
        if window is None or not (window[0] <= end and start <= window[1]):
            bad.append((start, end, status, version))
    return bad


def summarise(answers: list[Answer], swaps: list[dict], bad: list[Answer]) -> dict[str, Any]:
    def during(a: Answer) -> bool:
        return any(s["promoted_at"] - 0.5 <= a[1] and a[0] <= s["swapped_at"] for s in swaps)

    hot = [a for a in answers if during(a)]
    calm = [a for a in answers if not during(a)]
    ms = [(a[1] - a[0]) * 1000 for a in calm]
    swap_seconds = sum(s["swapped_at"] - s["promoted_at"] + 0.5 for s in swaps)
    calm_seconds = (max(a[1] for a in answers) - min(a[0] for a in answers)) - swap_seconds
    return {
        "requests": len(answers),
        "failed": sum(1 for a in answers if a[2] != 200),
        "wrong_version": len(bad),
        "versions_seen": sorted({a[3] for a in answers if a[3] is not None}),
        "calm_p50_ms": round(statistics.median(ms), 1),
        "calm_p99_ms": round(statistics.quantiles(ms, n=100)[98], 1),
        "calm_max_ms": round(max(ms), 1),
        "swap_max_ms": round(max((a[1] - a[0]) * 1000 for a in hot), 1) if hot else None,
        "calm_rps": round(len(calm) / calm_seconds, 1),
        "swap_rps": round(len(hot) / swap_seconds, 1) if swap_seconds else None,
        "swaps": swaps,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from cli.launcher import up
    from distillery.settings import PathSettings
    from training.registry import Registry

    settings = bench_settings("swap", **NO_SAMPLING)
    running = up(settings)
    try:
        wait_measured(running)
        registry = Registry(settings.paths.model_store_url())
        versions = copies(registry, args.promotions, settings.paths.model_cache_path())
        bodies = [json.dumps({"text": t}) for t in texts(256, PathSettings().data_dir)]
        out = settings.paths.state_dir / "answers.json"
        seconds = args.calm * (args.promotions + 1) + 10 * args.promotions
        load = mp.get_context("spawn").Process(
            target=hammer,
            args=(f"{running.api_url}/v1/predict", bodies, args.clients, seconds, out),
        )
        load.start()
        swaps = []
        for version in versions:
            time.sleep(args.calm)
            swap = ray.get(running.scheduler.promote.remote(version, "bench/swap"))
            print(swap.model_dump_json())
            swaps.append(swap.model_dump())
        load.join()
        answers: list[Answer] = [(a[0], a[1], a[2], a[3]) for a in json.loads(out.read_text())]
        bad = check(answers, windows([e.model_dump() for e in registry.history()], swaps))
        result = summarise(answers, swaps, bad)
        result["clients"] = args.clients
        result["replicas"] = settings.serve.num_replicas
        return result
    finally:
        running.stop()


def table(r: dict[str, Any]) -> str:
    calm = f"{r['calm_p50_ms']} / {r['calm_p99_ms']} / {r['calm_max_ms']}"
    rows = [[
        r["clients"], r["replicas"], len(r["swaps"]), r["requests"], r["failed"],
        r["wrong_version"], calm, r["swap_max_ms"], r["calm_rps"], r["swap_rps"],
        " ".join(f"{s['swap_s']:.1f}" for s in r["swaps"]),
    ]]  # fmt: skip
    header = [
        "clients", "replicas", "promotions", "requests", "failed", "wrong version",
        "calm p50 / p99 / max ms", "max ms in swaps", "calm rps", "rps in swaps", "swap s",
    ]  # fmt: skip
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--promotions", type=int, default=3)
    parser.add_argument("--calm", type=float, default=8, help="seconds of load between swaps")
    parser.add_argument("--name", default="swap")
    args = parser.parse_args()
    result = run(args)
    json_path, _ = write_results(args.name, result, table(result))
    print(table(result))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
