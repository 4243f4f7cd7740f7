"""The table and the plot of ``bench.people`` (from its results JSON only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MEANS = ("teacher", "v1", "early", "final", "early_ratings", "ratings")
COUNTS = ("promoted", "rounds", "teacher_rejections", "human_referee")
RATINGS_GOAL = 500  # the budget: ≥ 15 points above the teacher within 500 ratings


def _within(run: dict[str, Any], ratings: int) -> dict[str, Any]:
    """The last round whose ratings stay within ``ratings`` (the start if none)."""
    inside = [p for p in run["points"] if p["ratings"] <= ratings]
    return inside[-1] if inside else run["points"][0]


def _teacher_rejections(run: dict[str, Any]) -> int:
    """Rounds rejected on a check against the teacher (agreement, a slice, ECE)."""
    teacher_checks = ("agreement", "ece")
    return sum(
        1
        for p in run["points"][1:]
        if not p["passed"]
        and any(f in teacher_checks or f.startswith("slice:") for f in p["failed"])
    )


def _one(run: dict[str, Any]) -> dict[str, Any]:
    start, end = run["points"][0], run["points"][-1]
    early = _within(run, RATINGS_GOAL)
    return {
        "teacher": run["teacher_accuracy"], "v1": start["accuracy"], "early": early["accuracy"],
        "early_ratings": early["ratings"], "final": end["accuracy"], "ratings": end["ratings"],
        "promoted": sum(1 for p in run["points"][1:] if p["passed"]),
        "rounds": len(run["points"]) - 1, "teacher_rejections": _teacher_rejections(run),
        "human_referee": sum(1 for p in run["points"][1:] if p["referee"] == "human"),
        "adversary_weight": end.get("weights", {}).get("adversary"),
        "teacher_weight": end.get("teacher_weight"),
    }  # fmt: skip


def summary_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (scenario, arm): means over the seeds; counts summed; the early accuracy's range
    and the largest adversary weight."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in payload["runs"]:
        groups.setdefault((run["scenario"], run["arm"]), []).append(_one(run))
    rows = []
    for (scenario, arm), found in groups.items():
        mean = {k: sum(f[k] for f in found) / len(found) for k in MEANS}
        weights = [f["adversary_weight"] for f in found if f["adversary_weight"] is not None]
        teacher_w = [f["teacher_weight"] for f in found if f["teacher_weight"] is not None]
        rows.append(
            {
                "scenario": scenario, "arm": arm, "seeds": len(found), **mean,
                "early_min": min(f["early"] for f in found),
                "early_max": max(f["early"] for f in found),
                **{k: sum(f[k] for f in found) for k in COUNTS},
                "adversary_weight": max(weights) if weights else None,
                "teacher_weight": sum(teacher_w) / len(teacher_w) if teacher_w else None,
            }
        )  # fmt: skip
    return rows


def paired_gaps(payload: dict[str, Any], scenario: str, arm: str, base: str) -> list[float]:
    """Per seed: ``arm``'s final accuracy minus ``base``'s (points), on the same stream."""
    final = {
        (r["arm"], r.get("seed", 0)): r["points"][-1]["accuracy"]
        for r in payload["runs"]
        if r["scenario"] == scenario
    }
    seeds = sorted({s for a, s in final if a == arm} & {s for a, s in final if a == base})
    return [100 * (final[(arm, s)] - final[(base, s)]) for s in seeds]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def render(payload: dict[str, Any]) -> str:
    lines = [
        "| scenario | arm | teacher | v1 | student ≤ 500 ratings (range; ratings) | vs teacher "
        "| final (ratings) | promoted / rounds | rejected on teacher checks | human referee | "
        "adversary weight | teacher weight |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(payload):
        gap = (r["early"] - r["teacher"]) * 100
        spread = f"{_pct(r['early_min'])}–{_pct(r['early_max'])}"
        lines.append(
            f"| {r['scenario']} | {r['arm']} | {_pct(r['teacher'])} | {_pct(r['v1'])} | "
            f"{_pct(r['early'])} ({spread}; {r['early_ratings']:.0f}) | {gap:+.1f} pts | "
            f"{_pct(r['final'])} ({r['ratings']:.0f}) | {r['promoted']} / {r['rounds']} | "
            f"{r['teacher_rejections']} | {r['human_referee']} | "
            f"{_pct(r['adversary_weight'])} | {_pct(r['teacher_weight'])} |"
        )
    pairs = [
        ("normal", "after", "before", "with the normal prompts, after − before"),
        ("adversary", "trust on", "no adversary", "the adversary with trust on, against none"),
        ("adversary", "trust off", "no adversary", "the adversary with trust off, against none"),
    ]
    lines.append("")
    for scenario, arm, base, what in pairs:
        gaps = paired_gaps(payload, scenario, arm, base)
        if gaps:
            shown = ", ".join(f"{g:+.1f}" for g in gaps)
            lines.append(f"- Final accuracy, {what}, per seed: {shown} points.")
    args = payload["args"]
    lines += [
        "",
        f"Means over {args.get('seeds', 1)} streams (seeds; counts summed). "
        f"Accuracy against VADER's human labels on {args['eval_size']} held-out texts; "
        f"{args['steps']} rounds of {args['per_step']} requests; the teacher labels "
        f"{args['teacher_share']:.0%} of them plus every rated one. Ratings: honest ones "
        f"(the adversary's are extra). `{payload['command']}`, {payload['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def plot(payload: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(run["scenario"] for run in payload["runs"]))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        runs = [run for run in payload["runs"] if run["scenario"] == scenario]
        for arm in dict.fromkeys(run["arm"] for run in runs):
            mine = [run["points"] for run in runs if run["arm"] == arm]
            xs = [sum(p[i]["ratings"] for p in mine) / len(mine) for i in range(len(mine[0]))]
            ys = [sum(p[i]["accuracy"] for p in mine) / len(mine) for i in range(len(mine[0]))]
            ax.plot(xs, ys, marker="o", label=arm)
        teacher = sum(run["teacher_accuracy"] for run in runs) / len(runs)
        ax.axhline(teacher, linestyle="--", color="grey", label="teacher")
        ax.set_title(scenario)
        ax.set_xlabel("honest ratings (mean over seeds)")
        ax.set_ylabel("student accuracy (human labels)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
