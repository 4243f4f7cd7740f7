"""Which teacher, and what its student keeps (``make bench-teachers``).

On two tasks of real human-labelled text (VADER, Hutto & Gilbert 2014):

- ``sentiment`` (tasks/sentiment.yaml): negative / positive, the human rating's sign;
- ``source`` (tasks/source.yaml): which of movies / tweets / amazon / nyt a sentence came from.

Per task, every teacher labels the same held-out texts (``--eval-per-domain`` per domain) and the
same training texts (``--train-labels``, spread over the domains): all-MiniLM-L6-v2 and
all-mpnet-base-v2 zero-shot, and the local LLM (Qwen2.5-Coder-0.5B-Instruct Q4) through its real
llama.cpp HTTP server. Derived from the LLM's stored answers, at no extra request: the LLM with
contextual calibration (Zhao et al. 2021; three content-free requests) and the ensemble of the LLM
and MiniLM (the task file's weights). LLM answers go through the label cache
(``state/bench-teachers``), so a rerun pays only for texts it has not seen.

Then one student (the default shape) is distilled from each teacher's training labels, on the
same budget, and measured against the human labels. Speeds come from a quiet phase at the end,
in one run: each teacher on texts it has not seen (one thread; the LLM server on ``--threads``),
the student's forward (one thread), the student served by Ray Serve under ``wrk`` (64 clients),
and the labeler draining an LLM backlog over the real broker against the server alone.
Writes ``bench/results/teachers.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.harness import ROOT, markdown_table, write_results
from bench.labeler import llm_rates, llm_teacher_settings
from bench.offline_students import (
    Rows,
    accuracy,
    distil,
    fresh_texts,
    label_all,
    local_llm,
    served_rate,
    serving_sample,
    split,
)
from distillery.settings import TeacherSettings
from distillery.task import Task, load_task
from models.ensemble import mix
from models.factory import embedding_teacher, llm_teacher
from models.label_cache import CachedTeacher, LabelCache
from models.llm_teacher import LLMTeacher, calibrated
from models.teacher import Teacher, softmax

TASKS = {"sentiment": ROOT / "tasks" / "sentiment.yaml", "source": ROOT / "tasks" / "source.yaml"}
STATE = ROOT / "state" / "bench-teachers"
RETENTION_GOAL, SPEEDUP_GOAL, LABELER_GOAL = 0.97, 500.0, 0.9


@dataclass
class TeacherResult:
    teacher: str
    accuracy: float
    per_domain: dict[str, float]
    unreadable: int
    texts_per_s: float | None = None
    student: dict[str, Any] = field(default_factory=dict)


def ensemble(llm: np.ndarray, emb: np.ndarray, task: Task) -> np.ndarray:
    weights = task.ensemble or {"llm": 0.5, "embedding": 0.5}
    logs = [np.log(np.clip(p, 1e-12, None)) for p in (llm, emb)]
    readable = np.ones((2, len(llm)), dtype=bool)
    return softmax(mix(logs, [weights.get("llm", 0.5), weights.get("embedding", 0.5)], readable))


def measure_task(name: str, args: argparse.Namespace, url: str, say: Any) -> dict[str, Any]:
    task = load_task(TASKS[name])
    data_dir = ROOT / "data"
    evals, train = split(task, data_dir, args.eval_per_domain, args.train_labels, args.seed)
    llm = llm_teacher(llm_teacher_settings(url, args.threads), task)
    cache = LabelCache(STATE / "teacher-cache.sqlite")
    teachers: dict[str, Teacher] = {
        "minilm": embedding_teacher(TeacherSettings(model="minilm"), task)
    }
    if args.mpnet:
        teachers["mpnet"] = embedding_teacher(TeacherSettings(model="mpnet"), task)
    teachers["llm"] = CachedTeacher(llm, cache)
    probs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name → (eval probs, train probs)
    bad: dict[str, int] = {}
    for key, teacher in teachers.items():
        say(f"{name}: {key} labels {len(evals.texts)} held-out + {len(train.texts)} training texts")
        e, bad_e = label_all(teacher, evals.texts, say)
        t, bad_t = label_all(teacher, train.texts, say)
        probs[key], bad[key] = (e, t), bad_e + bad_t
    prior = llm.calibrate()
    probs["llm, calibrated"] = tuple(calibrated(p, prior) for p in probs["llm"])  # type: ignore[assignment]
    probs["llm + minilm ensemble"] = tuple(  # type: ignore[assignment]
        ensemble(p, q, task) for p, q in zip(probs["llm"], probs["minilm"], strict=True)
    )
    results = []
    for key, (e, t) in probs.items():
        acc, per = accuracy(e, evals)
        say(f"{name}: {key} accuracy {acc} {per}; distilling its student")
        student = distil(task, train, t, evals, e)
        results.append(
            TeacherResult(key, acc, per, bad.get(key, bad["llm"] if "llm" in key else 0))
        )
        results[-1].student = {k: v for k, v in student.items() if k != "model"}
        if key == "llm":
            llm_student = student["model"]
    speeds = teacher_speeds(teachers, llm, evals, train, args.speed_texts, say)
    for result in results:
        result.texts_per_s = speeds.get(result.teacher.split(",")[0].split(" +")[0])
    llm.close()
    winner = max(results, key=lambda r: r.accuracy)
    return {
        "task": name,
        "labels": task.label_names,
        "eval_texts": len(evals.texts),
        "train_labels": len(train.texts),
        "prior": [round(float(x), 3) for x in prior],
        "teachers": [asdict(r) for r in results],
        "winner": winner.teacher,
        "llm_student": llm_student,
    }


def teacher_speeds(
    teachers: dict[str, Teacher], llm: LLMTeacher, evals: Rows, train: Rows, n: int, say: Any
) -> dict[str, float]:
    """Texts/s of each teacher on ``n`` texts it has not labelled here (no cache)."""
    fresh = fresh_texts(set(evals.texts) | set(train.texts), 10 * n)
    speeds = {}
    for key, teacher in teachers.items():
        inner = llm if key == "llm" else teacher
        count = n if key == "llm" else 10 * n
        start = time.perf_counter()
        for i in range(0, count, 8):
            inner.label(fresh[i : min(i + 8, count)])
        speeds[key] = round(count / (time.perf_counter() - start), 2)
        say(f"  {key}: {speeds[key]} texts/s")
    return speeds


def labeler_rate(url: str, threads: int, sample: list[str], say: Any) -> dict[str, float]:
    """The labeler over the real broker against the LLM server alone, interleaved in one run."""
    rates = llm_rates(llm_teacher_settings(url, threads), sample, 32)
    say(f"  labeler {rates['labeler']:.2f}/s against the server alone {rates['raw']:.2f}/s")
    return rates


def run(args: argparse.Namespace, say: Any = print) -> dict[str, Any]:
    with local_llm(args.threads, STATE) as server:
        tasks = [measure_task(name, args, server.url, say) for name in args.tasks]
        held = serving_sample()
        labeler = labeler_rate(server.url, args.threads, held[-args.labeler_texts :], say)
    student = tasks[0].pop("llm_student")
    for task in tasks[1:]:
        task.pop("llm_student")
    served = served_rate(student, held, args.serve_seconds, say)
    return verdict(tasks, served, labeler, args)


def verdict(tasks: list[dict], served: dict, labeler: dict, args: argparse.Namespace) -> dict:
    first = {t["teacher"]: t for t in tasks[0]["teachers"]}["llm"]
    retention = first["student"]["accuracy"] / first["accuracy"]
    speedup = served["rps"] / first["texts_per_s"]
    return {
        "tasks": tasks,
        "served_student": served,
        "labeler": labeler,
        "goals": {
            "retention": {
                "value": round(retention, 3),
                "goal": RETENTION_GOAL,
                "met": retention >= RETENTION_GOAL,
            },
            "served_speedup": {
                "value": round(speedup, 1),
                "goal": SPEEDUP_GOAL,
                "met": speedup >= SPEEDUP_GOAL,
            },
            "labeler_ratio": {
                "value": labeler["ratio"],
                "goal": LABELER_GOAL,
                "met": labeler["ratio"] >= LABELER_GOAL,
            },
        },
        "settings": vars(args),
    }


def table(result: dict[str, Any]) -> str:
    parts = []
    for task in result["tasks"]:
        rows = []
        for t in task["teachers"]:
            s = t["student"]
            ratio = s["accuracy"] / t["accuracy"] if t["accuracy"] else float("nan")
            rows.append([
                t["teacher"], t["accuracy"], t["texts_per_s"] or "—", t["unreadable"],
                s["accuracy"], f"{ratio:.2f}", s["teacher_agreement"],
            ])  # fmt: skip
        head = (
            f"**{task['task']}** ({', '.join(task['labels'])}): {task['eval_texts']} held-out "
            f"texts, students distilled from {task['train_labels']} labels each; "
            f"best teacher: {task['winner']}.\n\n"
        )
        header = ["teacher", "accuracy", "texts/s", "unreadable", "student accuracy",
                  "student / teacher", "student–teacher agreement"]  # fmt: skip
        parts.append(head + markdown_table(header, rows))
    goals = result["goals"]
    served, lab = result["served_student"], result["labeler"]
    lines = [
        f"- the LLM's student keeps {goals['retention']['value']:.1%} of its accuracy on "
        f"sentiment (goal ≥ 97%: {'met' if goals['retention']['met'] else 'not met'});",
        f"- served by Ray Serve it answers {served['rps']} texts/s at 64 clients, "
        f"{goals['served_speedup']['value']}× the LLM server (goal ≥ 500×: "
        f"{'met' if goals['served_speedup']['met'] else 'not met'});",
        f"- the labeler over Kafka labels {lab['labeler']:.2f}/s against the server's own "
        f"{lab['raw']:.2f}/s: {lab['ratio']} (goal ≥ 0.9: "
        f"{'met' if goals['labeler_ratio']['met'] else 'not met'}).",
    ]
    return "\n\n".join(parts) + "\n\n" + "\n".join(lines) + "\n"


PAGES = (ROOT / "docs" / "teachers.md",)


def load() -> dict[str, Any]:
    import json

    from bench.harness import RESULTS

    loaded: dict[str, Any] = json.loads((RESULTS / "teachers.json").read_text())
    return loaded


def write_docs(result: dict[str, Any]) -> None:
    """The table into every page that shows it (between ``<!-- teachers:… -->`` markers)."""
    from bench.harness import between_markers

    for page in PAGES:
        page.write_text(between_markers(page.read_text(), "teachers", table(result)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", action="store_true", help="only rewrite the docs' tables")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--eval-per-domain", type=int, default=400)
    parser.add_argument("--train-labels", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=1, help="the LLM server's threads")
    parser.add_argument("--speed-texts", type=int, default=40)
    parser.add_argument("--labeler-texts", type=int, default=96)
    parser.add_argument("--serve-seconds", type=float, default=15)
    parser.add_argument("--mpnet", action="store_true", help="also all-mpnet-base-v2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.docs:
        write_docs(load())
        return
    result = run(args)
    json_path, md_path = write_results("teachers", result, table(result))
    write_docs(result)
    print(table(result))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
