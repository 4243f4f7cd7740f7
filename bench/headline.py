"""The README's figures: one row per benchmark, read from ``bench/results/*.json`` only.

``bench.docs_tables`` renders it between the README's ``results:headline`` markers
(``python -m bench.docs_tables``), and its ``--check`` fails when the README and the results
disagree. Each row names the commit and date its results file records
(``harness.provenance``; "before provenance" for a file written before it existed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, markdown_table

Row = tuple[str, str, str]  # (figure, goal, met)


def _serve(d: dict[str, Any]) -> Row:
    v = d["verdict"]
    served = next(s for s in d["served"] if s["clients"] == 64 and s["texts_per_request"] == 1)
    raw_b1 = next(r for r in d["raw"]["fp32"] if r["batch"] == 1)["p50_ms"]
    figure = (
        f"{served['texts_per_s']} texts/s at 64 clients, {v['throughput_ratio_64']} of the raw "
        f"forward rate; p50 alone {v['p50_alone_ms']} ms against raw batch-1 {raw_b1} ms"
    )
    met = f"{'yes' if v['throughput_met'] else 'no'}; {'yes' if v['latency_met'] else 'no'}"
    return figure, f"≥ {v['throughput_target']} × raw; ≤ raw + 1 ms", met


def _swap(d: dict[str, Any]) -> Row:
    figure = (
        f"{len(d['swaps'])} promotions under {d['clients']} clients: {d['failed']} of "
        f"{d['requests']} requests failed, {d['wrong_version']} answered by a wrong version"
    )
    return figure, "0 failed, 0 wrong", "yes" if d["failed"] == d["wrong_version"] == 0 else "no"


def _labeler(d: dict[str, Any]) -> Row:
    figure = (
        f"embedding teacher: {d['labeler_per_s']} labels/s over Kafka against "
        f"{d['raw_teacher_per_s']} alone, {d['ratio']}"
    )
    ratios = [d["ratio"]]
    if llm := d.get("llm"):
        figure += (
            f"; LLM over HTTP: {llm['labeler_per_s']} against {llm['raw_teacher_per_s']}, "
            f"{llm['ratio']}"
        )
        ratios.append(llm["ratio"])
    return figure, f"≥ {d['goal']}", "yes" if min(ratios) >= d["goal"] else "no"


def _drift(d: dict[str, Any]) -> Row:
    parts = [f"{p['domain']} {p['end']:.3f} (teacher {p['teacher']:.3f})" for p in d["phases"]]
    caught = next(iter(d["goals"].values()))
    met = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in caught.items())
    return f"served student at each phase's end: {', '.join(parts)}", next(iter(d["goals"])), met


def _cascade(d: dict[str, Any]) -> Row:
    parts = [
        f"{p['phase']} {p['share_first']:.0%} → {p['share_last']:.0%}, delivered "
        f"{p['delivered']:.3f} vs teacher {p['teacher']:.3f}"
        for p in d["phases"]
    ]
    goals = d["goals"]
    met = "; ".join(
        ", ".join(f"{k} {'yes' if ok else 'no'}" for k, ok in verdicts.items())
        for verdicts in goals.values()
    )
    return "teacher share (first → last third): " + "; ".join(parts), " and ".join(goals), met


def _chaos(d: dict[str, Any]) -> Row:
    lost = {p["kind"]: p["feedback_lost"] for p in d["phases"]}
    total = sum(p["feedback_accepted"] for p in d["phases"])
    per_kill = ", ".join(f"{kind} {n}" for kind, n in lost.items())
    figure = f"acknowledged feedback lost per kill: {per_kill} (of {total} accepted)"
    return figure, "0 lost", "yes" if not any(lost.values()) else "no"


def _generate(d: dict[str, Any]) -> Row:
    rows, rec = d["rows"], d["goals"]["recovery"]
    after = rec["answers"] if rec["answers"] is not None else "not within the run"
    figure = (
        f"reviews chrF {rows[0]['amazon']['chrf']} never retrained → {rows[1]['amazon']['chrf']}"
        f" after round 1; tweets back to that level after {after} answers"
    )
    return figure, f"≤ {rec['goal']} answers", "yes" if rec["met"] else "no"


def _generate_loop(d: dict[str, Any]) -> Row:
    rows, goal = d["rows"], d["goals"]
    after = goal["answers"] if goal["answers"] is not None else "not within the run"
    figure = (
        f"through `distillery up`: reviews chrF {rows[0]['amazon']['chrf']} never retrained → "
        f"{rows[1]['amazon']['chrf']} after round 1 ({rows[1].get('outcome', '—')}); tweets "
        f"back to that level after {after} answers"
    )
    return figure, f"≤ {goal['goal']} answers", "yes" if goal["met"] else "no"


def _generate_speed(d: dict[str, Any]) -> Row:
    sp, goal = d["speeds"], d["goals"]["speedup"]
    figure = (
        f"served student (llama.cpp) {sp['student']['tokens_per_s']} tokens/s against the "
        f"teacher's {sp['teacher']['tokens_per_s']}, {goal['value']}×, one stream and one "
        f"thread each (transformers: {sp['student (transformers)']['tokens_per_s']})"
    )
    return figure, f"≥ {goal['goal']:g}×", "yes" if goal["met"] else "no"


def _generate_batch(d: dict[str, Any]) -> Row:
    goal, rows = d["goal"], d["rows"]
    student = next(r for r in rows if r.get("streams") == goal["clients"])
    teacher = next(r for r in rows if r.get("clients") == goal["clients"] and "streams" not in r
                   and r["who"].startswith("teacher (its"))  # fmt: skip
    figure = (
        f"{goal['clients']} concurrent chats: served student {student['tokens_per_s']} tokens/s "
        f"(decoded together) against the teacher's server's {teacher['tokens_per_s']}, "
        f"{goal['value']}×"
    )
    return figure, f"≥ {goal['goal']:g}×", "yes" if goal["met"] else "no"


def _retention(d: dict[str, Any]) -> Row:
    """The fastest served student and the one that keeps the most, each with its speed-up."""
    goals, most = d["goals"], max(r["labels"] for r in d["rows"])
    n = d["settings"].get("batched", 8)  # texts a request of the second load
    served = [r for r in d["rows"] if r["labels"] == most and r["speedup"] is not None]
    picks = {id(r): r for r in (max(served, key=lambda r: r["speedup"]),
                                max(served, key=lambda r: r["retention"]))}  # fmt: skip
    kept = "; ".join(
        f"{r['recipe']} ({r['params_m']}M) keeps {r['retention']:.3f} at {r['speedup']}×"
        + (f" ({r['speedup_batched']}× at {n} texts a request)" if r.get("speedup_batched") else "")
        for r in picks.values()
    )
    figure = (
        f"LLM teacher {d['teacher']['accuracy']} on sentiment; students on {most} labels: {kept}"
    )
    goal = f"≥ {goals['retention']:.0%} of the teacher at ≥ {goals['speedup']:g}× its speed"
    return figure, goal, "yes" if goals["met"] else "no"


def _ensemble(d: dict[str, Any], k: int = 100) -> Row:
    """Per task: the fixed mix and the mix measured on ``k`` human labels, against the better
    member alone (issue 14: the ensemble is how a user gets the best of both)."""
    parts, met = [], True
    for t in d["tasks"]:
        measured = next(r["accuracy"] for r in t["measured"] if r["human_labels"] == k)
        best = max(t["members"].values())
        met = met and measured >= best
        parts.append(
            f"{t['task']}: fixed mix {t['fixed']['accuracy']}, measured on {k} human labels "
            f"{measured} (better member alone {best})"
        )
    return (
        "; ".join(parts),
        f"the better member's accuracy, from {k} human labels",
        ("yes" if met else "no"),
    )


ROWS: dict[str, tuple[str, Callable[[dict[str, Any]], Row]]] = {
    "retention": ("the LLM teacher's student", _retention),
    "ensemble": ("an ensemble mixed by people", _ensemble),
    "cascade": ("cascade on drifting traffic", _cascade),
    "drift_recovery": ("drift recovery", _drift),
    "serve": ("serving", _serve),
    "swap": ("hot swap", _swap),
    "labeler": ("labeler", _labeler),
    "chaos": ("kills", _chaos),
    "generate": ("generative student", _generate),
    "generate_loop": ("generative student, live loop", _generate_loop),
    "generate-speed": ("generative student, speed", _generate_speed),
    "generate_batch": ("generative student, concurrent chats", _generate_batch),
}
# a row's page, where it is not docs/benchmarks.md
PAGES = {
    "generate": "docs/generate.md",
    "generate_loop": "docs/generate.md",
    "generate-speed": "docs/generate.md",
    "generate_batch": "docs/generate.md",
    "retention": "docs/teachers.md",
    "ensemble": "docs/teachers.md",
}


def table(results: Path = RESULTS) -> str:
    rows = []
    for name, (what, build) in ROWS.items():
        path = results / f"{name}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        made = data.get("provenance") or {}
        commit = f"`{made['commit']}`, {made['date']}" if made else "before provenance"
        page = PAGES.get(name, "docs/benchmarks.md")
        rows.append([f"[{what}]({page})", *build(data), commit])
    return markdown_table(["benchmark", "figure", "goal", "met", "commit"], rows)
