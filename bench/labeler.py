"""Labeler throughput over the real embedded broker against the teacher's raw speed, and the
lag from prediction to label at a steady input rate, for both teacher kinds.

``python -m bench.labeler`` (``make bench-labeler``) writes ``bench/results/labeler.{json,md}``.
All in one process, one torch thread each, as the labeler actor runs. In ``rounds`` rounds: the
teacher alone on a chunk of texts at the labeler's batch size, then the running labeler draining
the same chunk as a backlog from Kafka (counted from its first finished batch of the chunk, so
consumer-group join and model load are left out); then events produced
at half the teacher's raw rate for ``lag_s`` seconds, each label's lag = the moment it is read
back from the labels topic minus its prediction time. Then the same interleaving with the LLM
teacher over HTTP (the local llama.cpp server, ``--llm-threads``, no label cache) on
``--llm-texts`` texts in chunks of ``LLM_CHUNK``.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import markdown_table, publish, texts
from distillery import bus
from distillery.events import SampledPrediction, TeacherLabel, Topics, decode
from distillery.settings import KafkaSettings, PathSettings, Settings, TeacherSettings
from distillery.task import load_task
from models.responder import Responder
from models.teacher import Teacher
from services.broker import EmbeddedBroker
from services.labeler import Labeler

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "state" / "bench-labeler"
GOAL = 0.9
LLM_CHUNK = 48  # six LLM batches of 8: the drain counts the four between the first and the last


@dataclass(frozen=True)
class Lag:
    n: int
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float


def classifier(labeler: Labeler) -> Teacher:
    """The labeler's teacher of a classify task (these benchmarks label VADER texts)."""
    teacher = labeler.teacher
    if isinstance(teacher, Responder):
        raise TypeError(f"{teacher.teacher_id} writes replies: bench.labeler measures labels")
    return teacher


def raw_seconds(labeler: Labeler, chunk: list[str]) -> float:
    """Seconds the teacher alone takes on ``chunk``, at the labeler's batch size."""
    size = labeler.settings.teacher.labeler_batch()
    start = time.perf_counter()
    for i in range(0, len(chunk), size):
        classifier(labeler).label(chunk[i : i + size])
    return time.perf_counter() - start


def _event(i: int, text: str, prefix: str) -> SampledPrediction:
    return SampledPrediction(
        request_id=f"{prefix}-{i}", text=text, student_probs=[0.5, 0.5], model_version=1
    )


def drain(labeler: Labeler, chunk: list[str], kafka: KafkaSettings, tag: str) -> tuple[int, float]:
    """Put ``chunk`` on the sampled topic as a backlog and wait until the running labeler has
    labelled it: (labels, seconds) from its first finished batch of this backlog to the batch
    before its last (the first waits for the backlog to arrive, the last, partial one for the
    batch window: neither is throughput)."""
    base = labeler.counts["labelled"]
    producer = bus.make_producer(kafka)
    for i, text in enumerate(chunk):
        bus.send(producer, Topics.SAMPLED, _event(i, text, tag), f"{tag}-{i}")
    producer.flush()
    producer.close()
    while labeler.counts["labelled"] == base:
        time.sleep(0.05)
    first, start = labeler.counts["labelled"], time.perf_counter()
    while (done := labeler.counts["labelled"]) < base + len(
        chunk
    ) - labeler.settings.teacher.labeler_batch():
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    while labeler.counts["labelled"] < base + len(chunk):
        time.sleep(0.05)
    return done - first, seconds


def interleaved(
    labeler: Labeler, chunks: list[list[str]], kafka: KafkaSettings
) -> dict[str, float]:
    """Teacher alone, then the labeler over Kafka, chunk after chunk: the machine's drift
    (this one is noisy) hits both alike. Rates in texts per second."""
    threading.Thread(target=labeler.run, daemon=True).start()
    raw_n, raw_s, lab_n, lab_s = 0, 0.0, 0, 0.0
    for i, chunk in enumerate(chunks):
        raw_s += raw_seconds(labeler, chunk)
        raw_n += len(chunk)
        n, seconds = drain(labeler, chunk, kafka, f"backlog{i}")
        lab_n, lab_s = lab_n + n, lab_s + seconds
    return {"raw": raw_n / raw_s, "labeler": lab_n / lab_s}


def steady_lag(kafka: KafkaSettings, sample: list[str], rate: float, seconds: float) -> Lag:
    """Produce at ``rate`` events/s for ``seconds``; read labels back; lag percentiles."""
    lags: list[float] = []
    wanted = int(rate * seconds)
    ready, done = threading.Event(), threading.Event()
    args = (kafka, wanted, lags, ready, done)
    threading.Thread(target=_read_lags, args=args, daemon=True).start()
    ready.wait(timeout=30)
    producer = bus.make_producer(kafka)
    start = time.monotonic()
    for i in range(wanted):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        text = sample[i % len(sample)]
        bus.send(producer, Topics.SAMPLED, _event(i, text, "steady"), f"steady-{i}")
    producer.flush()
    done.wait(timeout=seconds + 120)
    ordered = sorted(lags)
    return Lag(
        len(ordered), _pct(ordered, 0.5), _pct(ordered, 0.95), _pct(ordered, 0.99),
        round(ordered[-1], 3),
    )  # fmt: skip


def _pct(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _read_lags(kafka: KafkaSettings, wanted: int, lags: list[float], ready: Any, done: Any) -> None:
    consumer = bus.make_reader(kafka)
    parts = bus.partitions(consumer, Topics.LABELS)
    consumer.assign(parts)
    for tp, end in consumer.end_offsets(parts).items():
        consumer.seek(tp, end)  # explicit: seek_to_end resolves only at the next poll
    ready.set()
    while len(lags) < wanted:
        for record in bus.poll(consumer, 200, 1_000):
            label = decode(TeacherLabel, record.value)
            if label.request_id.startswith("steady-") and label.predicted_at is not None:
                lags.append(time.time() - label.predicted_at)
    consumer.close()
    done.set()


def run(n: int, rounds: int, lag_s: float) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        settings = Settings(kafka=kafka, paths=PathSettings(state_dir=STATE))
        labeler = Labeler(settings, load_task(settings.paths.task_file))
        sample = texts(n, settings.paths.data_dir, seed=3)
        classifier(labeler).label(sample[:64])  # warm up
        size = -(-n // rounds)
        rates = interleaved(labeler, [sample[i : i + size] for i in range(0, n, size)], kafka)
        lag = steady_lag(kafka, sample, rates["raw"] / 2, lag_s)
        labeler.stop()
    return {
        "texts": n,
        "rounds": rounds,
        "batch_size": settings.teacher.labeler_batch(),
        "batch_wait_s": settings.teacher.batch_wait_s,
        "raw_teacher_per_s": round(rates["raw"], 1),
        "labeler_per_s": round(rates["labeler"], 1),
        "ratio": round(rates["labeler"] / rates["raw"], 3),
        "goal": GOAL,
        "steady_rate_per_s": round(rates["raw"] / 2, 1),
        "lag_s": lag.__dict__,
    }


def llm_rates(teacher: TeacherSettings, sample: list[str], chunk: int) -> dict[str, float]:
    """The labeler over the real broker against the LLM endpoint alone (``teacher.url``),
    interleaved in one run, ``chunk`` texts a round; rates in texts per second."""
    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        settings = Settings(
            kafka=kafka,
            paths=PathSettings(state_dir=STATE / "llm"),
            teacher=teacher.model_copy(update={"batch_wait_s": 0.2}),
        )
        labeler = Labeler(settings, load_task(settings.paths.task_file))
        classifier(labeler).label(sample[:2])  # warm up
        chunks = [sample[i : i + chunk] for i in range(0, len(sample), chunk)]
        rates = interleaved(labeler, chunks, kafka)
        labeler.stop()
    rates["ratio"] = round(rates["labeler"] / rates["raw"], 3)
    return rates


def llm_teacher_settings(url: str, threads: int) -> TeacherSettings:
    """The LLM teacher as the benchmarks measure it: two requests in flight, no label cache
    (a cache would answer the labeler's pass from the raw pass)."""
    return TeacherSettings(kind="llm", url=url, concurrency=2, cache=False, llm_threads=threads)


def run_llm(n: int, threads: int) -> dict[str, Any]:
    """``llm_rates`` against the local llama.cpp server on ``threads`` threads."""
    from models.gguf import local_gguf
    from services.llm_server import LocalLLM

    STATE.mkdir(parents=True, exist_ok=True)
    sample = texts(n, ROOT / "data", seed=5)
    log = STATE / "llm-server.log"
    with LocalLLM(local_gguf(ROOT / "data"), threads, log_path=log) as server:
        rates = llm_rates(llm_teacher_settings(server.url, threads), sample, LLM_CHUNK)
    return {
        "texts": n,
        "chunk": LLM_CHUNK,
        "server_threads": threads,
        "raw_teacher_per_s": round(rates["raw"], 3),
        "labeler_per_s": round(rates["labeler"], 3),
        "ratio": rates["ratio"],
        "goal": GOAL,
    }


def table(result: dict[str, Any]) -> str:
    lag = result["lag_s"]
    rows = [
        ["teacher alone, batch after batch", f"{result['raw_teacher_per_s']} texts/s"],
        ["labeler over Kafka (backlog)", f"{result['labeler_per_s']} labels/s"],
        ["ratio (goal ≥ 0.9)", f"{result['ratio']} ({_met(result)})"],
        [
            f"lag at {result['steady_rate_per_s']} events/s, p50 / p95 / p99 / max",
            f"{lag['p50_s']} / {lag['p95_s']} / {lag['p99_s']} / {lag['max_s']} s ({lag['n']})",
        ],
    ]
    head = (
        f"Labeler, embedding teacher (MiniLM): {result['texts']} VADER texts in "
        f"{result['rounds']} interleaved rounds, batch {result['batch_size']}, "
        f"wait {result['batch_wait_s']} s, one torch thread, embedded broker.\n\n"
    )
    out = head + markdown_table(["measure", "value"], rows)
    llm = result.get("llm")
    if llm:
        rows = [
            ["LLM server alone, batch after batch", f"{llm['raw_teacher_per_s']} texts/s"],
            ["labeler over Kafka (backlog)", f"{llm['labeler_per_s']} labels/s"],
            ["ratio (goal ≥ 0.9)", f"{llm['ratio']} ({_met(llm)})"],
        ]
        out += (
            f"\n\nLabeler, LLM teacher over HTTP (local llama.cpp server, "
            f"{llm['server_threads']} thread): {llm['texts']} VADER texts in chunks of "
            f"{llm['chunk']}, interleaved, no label cache.\n\n"
        ) + markdown_table(["measure", "value"], rows)
    return out


def _met(rates: dict[str, Any]) -> str:
    return "met" if rates["ratio"] >= GOAL else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1_800)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--lag-seconds", type=float, default=60)
    parser.add_argument("--llm-texts", type=int, default=144, help="0 skips the LLM teacher")
    parser.add_argument("--llm-threads", type=int, default=1)
    args = parser.parse_args()
    result = run(args.texts, args.rounds, args.lag_seconds)
    if args.llm_texts:
        result["llm"] = run_llm(args.llm_texts, args.llm_threads)
    publish("labeler", result, table(result))


if __name__ == "__main__":
    main()
