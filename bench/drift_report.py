"""The drift-recovery benchmark's outputs: JSON, a markdown table and a PNG plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.drift_recovery import WITHIN, Run


def goals(run: Run, max_labels: int = 1_000, max_forgetting: float = 0.03) -> dict[str, Any]:
    """The issue's three goals, each with the figures it was judged on."""
    phases = run.phases
    caught = {
        p.domain: p.caught_up_labels is not None and p.caught_up_labels <= max_labels
        for p in phases
    }
    better = {p.domain: p.end > p.frozen for p in phases[1:]}  # the shifted phases
    kept = {p.domain: p.final >= p.end - max_forgetting for p in phases[:-1]}
    return {
        f"within {WITHIN * 100:.0f} pts of the teacher after ≤ {max_labels} labels": caught,
        "better than the never-retrained student on each shifted phase": better,
        f"no earlier phase worse by > {max_forgetting * 100:.0f} pts at the end": kept,
    }


def table(run: Run) -> str:
    head = (
        "| phase | teacher | never retrained (v1) | online at start | online at end | "
        "online at the end of the run | labels in phase | labels / s to within 2 pts | versions |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for p in run.phases:
        caught = (
            "not reached"
            if p.caught_up_labels is None
            else f"{p.caught_up_labels} / {p.caught_up_s:.0f} s"
        )
        versions = sorted(set(p.versions))
        rows.append(
            f"| {p.domain} | {p.teacher:.3f} | {p.frozen:.3f} | {p.start:.3f} | {p.end:.3f} | "
            f"{p.final:.3f} | {p.labels} | {caught} | v{versions[0]}–v{versions[-1]} |"
        )
    lines = [head + "\n".join(rows), "", "Goals:"]
    for goal, verdicts in goals(run).items():
        marks = ", ".join(f"{d} {'yes' if ok else 'no'}" for d, ok in verdicts.items())
        lines.append(f"- {goal}: {marks}")
    lines.append(f"\nTeacher: {run.teacher}; wall time {run.wall_s / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, phase in enumerate(run.phases):  # one line per phase: the domains differ
        mine = [p for p in run.points if p.phase == phase.domain]
        ax.plot([p.t_s for p in mine], [p.accuracy for p in mine], "o-", ms=3, color="tab:blue",
                label="online student (served)" if i == 0 else "_")  # fmt: skip
    starts: dict[str, float] = {}
    for p in run.points:
        starts.setdefault(p.phase, p.t_s)
    bounds = [*starts.values(), run.points[-1].t_s if run.points else 0.0]
    for i, phase in enumerate(run.phases):
        left, right = bounds[i], bounds[i + 1]
        first = i == 0  # one legend entry per line kind ("_" hides one)
        ax.hlines(phase.teacher, left, right, colors="tab:green", label="teacher" if first else "_")
        ax.hlines(phase.frozen, left, right, colors="tab:red", linestyles="dashed",
                  label="never retrained (v1)" if first else "_")  # fmt: skip
        ax.axvline(left, color="grey", lw=0.5)
        ax.text(left + 2, 0.52, phase.domain, fontsize=9, color="grey")
    ax.set_xlabel("seconds of live traffic")
    ax.set_ylabel("accuracy on held-out human labels")
    ax.set_ylim(0.5, 1.0)
    ax.legend(loc="upper left", ncol=3, fontsize=9)
    ax.set_title(f"drift recovery, teacher {run.teacher}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(run: Run, base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    data = {**asdict(run), "goals": goals(run)}
    base.with_suffix(".json").write_text(json.dumps(data, indent=2))
    base.with_suffix(".md").write_text(table(run))
    plot(run, base.with_suffix(".png"))
    print(table(run))
