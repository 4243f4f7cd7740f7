"""The LLM teacher against the real llama.cpp server on the real GGUF, with the real embedded
broker: labels that match the server's own logprobs, 429 / slow / unreadable answers through a
fault-injecting proxy, and the start-up checks of the task file and the URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.launcher import check_teacher
from distillery import bus
from distillery.events import DeadLetter, SampledPrediction, TeacherLabel, Topics, decode
from distillery.settings import (
    KafkaSettings,
    PathSettings,
    Settings,
    TeacherSettings,
    TrustSettings,
)
from distillery.task import Label, Task, load_task
from feedback import human_labels, trust_report
from feedback.examples import read_labels
from feedback.store import to_row, write_shard
from feedback.trust_report import TrustModel
from models.ensemble import mix
from models.gguf import local_gguf
from models.llm_teacher import TaskFileError, soft_label
from models.openai_api import EndpointMismatch
from models.teacher import softmax
from services.broker import EmbeddedBroker
from services.labeler import Labeler
from services.llm_server import LocalLLM
from tests.conftest import DATA, TASK
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration
TEXTS = [
    "I loved every minute of it, a wonderful film.",
    "A dull, miserable waste of time.",
    "The best purchase I have made all year.",
    "It broke after two days and support never answered.",
    "What a fantastic, warm and funny story.",
    "Terrible acting and a plot that makes no sense.",
    "Absolutely delightful from start to finish.",
    "I want my money back.",
]


@pytest.fixture(scope="module")
def llm() -> Iterator[LocalLLM]:
    with LocalLLM(local_gguf(DATA)) as server:
        yield server


@pytest.fixture()
def kafka() -> Iterator[KafkaSettings]:
    with EmbeddedBroker() as broker:
        settings = broker.kafka()
        bus.ensure_topics(settings)
        yield settings


def _settings(kafka: KafkaSettings, state: Path, url: str, **teacher: object) -> Settings:
    return Settings(
        kafka=kafka,
        paths=PathSettings(state_dir=state, task_file=TASK),
        teacher=TeacherSettings(kind="llm", url=url, batch_wait_s=0.2, **teacher),
    )


def _send(kafka: KafkaSettings, texts: list[str], prefix: str) -> None:
    producer = bus.make_producer(kafka)
    for i, text in enumerate(texts):
        event = SampledPrediction(
            request_id=f"{prefix}-{i}", text=text, student_probs=[0.5, 0.5], model_version=1
        )
        bus.send(producer, Topics.SAMPLED, event, event.request_id)
    producer.flush()
    producer.close()


def _wait(kafka: KafkaSettings, topic: str, n: int, timeout_s: float) -> list[bus.Record]:
    deadline = time.monotonic() + timeout_s
    records: list[bus.Record] = []
    while time.monotonic() < deadline:
        records = bus.read_all(kafka, topic)
        if len(records) >= n:
            return records
        time.sleep(0.5)
    raise AssertionError(f"{topic}: {len(records)} records after {timeout_s}s, wanted {n}")


def _run(labeler: Labeler) -> threading.Thread:
    thread = threading.Thread(target=labeler.run, daemon=True)
    thread.start()
    return thread


def test_llm_labels_carry_the_teacher_id_and_match_the_servers_own_logprobs(
    llm: LocalLLM, kafka: KafkaSettings, tmp_path: Path
) -> None:
    settings = _settings(kafka, tmp_path, llm.url)
    labeler = Labeler(settings, load_task(TASK))
    thread = _run(labeler)
    try:
        _send(kafka, TEXTS[:4], "req")
        labels = [decode(TeacherLabel, r.value) for r in _wait(kafka, Topics.LABELS, 4, 120)]
    finally:
        labeler.stop()
        thread.join(timeout=30)
    teacher = labeler.teacher
    assert {lab.teacher_id for lab in labels} == {teacher.teacher_id}
    assert teacher.teacher_id.startswith("llm:qwen2.5-coder-0.5b-instruct-q4:")
    inner = teacher.inner  # type: ignore[attr-defined]  # the LLM behind the label cache
    for lab in labels:
        raw = inner.ask(lab.text).top_logprobs  # the server's own answer for the same text
        expected = soft_label(raw, ["negative", "positive"])
        assert expected is not None
        # llama.cpp's logprobs move by ~0.01 between two calls on one text (a reused KV-cache
        # prefix is evaluated in other batch shapes: measured 0.0095 here); the mapping itself
        # is exact (tests/unit/test_llm_teacher.py)
        np.testing.assert_allclose(lab.teacher_probs, expected, atol=0.03)
        assert np.argmax(lab.teacher_probs) == np.argmax(expected)
        np.testing.assert_allclose(np.exp(lab.teacher_logits), lab.teacher_probs, atol=1e-5)
    by_text = {lab.text: lab.teacher_probs for lab in labels}
    assert np.argmax(by_text[TEXTS[0]]) == 1 and np.argmax(by_text[TEXTS[1]]) == 0
    assert labeler.stats()["tokens"] > 4 * 20  # the system prompt alone is ~60 tokens


def test_429_slow_and_unreadable_answers_are_retried_or_dead_lettered_without_a_stall(
    llm: LocalLLM, kafka: KafkaSettings, tmp_path: Path
) -> None:
    proxy = FaultProxy(llm.url)
    # breaker_failures 5: the timeout and the 500 in a row, plus an ordinary answer slow on a
    # loaded machine, would open it, and an open breaker asks the whole batch again
    settings = _settings(
        kafka, tmp_path, proxy.url, timeout_s=6.0, backoff_s=0.2, cache=False, breaker_failures=5
    )
    labeler = Labeler(settings, load_task(TASK))  # its start-up probe goes through unfaulted
    proxy.faults.extend(["429", "429", "slow:10", "500", "garbage", "html"])
    thread = _run(labeler)
    try:
        _send(kafka, TEXTS[:6], "faulty")
        letters = [decode(DeadLetter, r.value) for r in _wait(kafka, Topics.DEAD_LETTER, 2, 180)]
        labels = _wait(kafka, Topics.LABELS, 4, 180)
        _send(kafka, TEXTS[6:], "after")  # the labeler carries on past the faults
        labels = _wait(kafka, Topics.LABELS, 6, 120)
    finally:
        labeler.stop()
        thread.join(timeout=30)
        proxy.close()
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 2 and all("answer unreadable" in r for r in reasons)
    assert any("banana" in r for r in reasons) and any("Bad gateway page" in r for r in reasons)
    ids = [decode(TeacherLabel, r.value).request_id for r in labels]
    assert len(ids) == len(set(ids)) == 6 and {"after-0", "after-1"} <= set(ids)
    stats = labeler.stats()
    assert stats["retries"] >= 4  # two 429s, the timeout and the 500, each retried
    assert stats["dead_letters"] == 2 and stats["labelled"] == 6
    # the start-up probe, then one answer per label, plus one for each ordinary answer that
    # took longer than the 6 s timeout on a loaded machine and was asked again (a retry beyond
    # the four faults above); CI saw one such
    assert proxy.served.count("ok") == 1 + 6 + (stats["retries"] - 4)


def _task(**update: object) -> Task:
    return load_task(TASK).model_copy(update=update)


def test_startup_refuses_a_label_clash_a_missing_instruction_and_a_foreign_url(
    llm: LocalLLM, kafka: KafkaSettings, tmp_path: Path
) -> None:
    settings = _settings(kafka, tmp_path, llm.url)
    clash = _task(
        labels=(Label(name="unclear", prompt="?"), Label(name="uncertain", prompt="??")),
    )
    with pytest.raises(TaskFileError, match=r"'unclear' and 'uncertain' begin with the same token"):
        check_teacher(settings, clash, say=lambda _: None)
    check_teacher(settings, clash.model_copy(update={"answers": "letters"}), say=lambda _: None)
    with pytest.raises(TaskFileError, match="has no 'instruction'"):
        check_teacher(settings, _task(instruction=None), say=lambda _: None)
    site = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)  # answers, but HTML
    threading.Thread(target=site.serve_forever, daemon=True).start()
    foreign = f"http://127.0.0.1:{site.server_address[1]}"
    try:
        other = _settings(kafka, tmp_path, foreign)
        with pytest.raises(EndpointMismatch, match=rf"{foreign}/v1/models answered 404"):
            check_teacher(other, _task(), say=lambda _: None)
    finally:
        site.shutdown()
        site.server_close()
    wrong_model = _settings(kafka, tmp_path, llm.url, llm_model="gpt-17")
    with pytest.raises(EndpointMismatch, match=r"serves \['qwen2.5-coder-0.5b-instruct-q4'\], not"):
        check_teacher(wrong_model, _task(), say=lambda _: None)


def test_a_labeler_started_before_its_teacher_waits_for_it_then_labels(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    from services.broker import free_port

    port = free_port()
    settings = _settings(kafka, tmp_path, f"http://127.0.0.1:{port}")
    labeler = Labeler(settings, load_task(TASK))  # nothing answers there yet: no crash
    assert labeler.teacher_health().state == "open"
    assert "no answer" in (labeler.teacher_health().last_error or "")
    thread = _run(labeler)
    try:
        _send(kafka, TEXTS[:2], "early")
        time.sleep(3)
        assert not bus.read_all(kafka, Topics.LABELS)  # the events wait on their topic
        with LocalLLM(local_gguf(DATA), port=port):
            _wait(kafka, Topics.LABELS, 2, 120)
            assert labeler.teacher_health().state == "closed"
    finally:
        labeler.stop()
        thread.join(timeout=30)


def test_an_ensemble_label_carries_each_members_answer_and_a_round_mixes_them_by_people(
    llm: LocalLLM, kafka: KafkaSettings, tmp_path: Path
) -> None:
    """The LLM and MiniLM as one ensemble teacher (half and half, no weights in the task file):
    each label carries both members' own answers, through the store's Parquet; once each member
    has enough human labels, the round's labels are the members mixed by their measured shares,
    and the running labeler's next labels are too, under the same teacher id."""
    settings = Settings(
        kafka=kafka,
        paths=PathSettings(state_dir=tmp_path, task_file=TASK),
        teacher=TeacherSettings(kind="ensemble", url=llm.url, batch_wait_s=0.2),
    )
    task = load_task(TASK)
    labeler = Labeler(settings, task)
    thread = _run(labeler)
    try:
        _send(kafka, TEXTS, "ens")
        records = _wait(kafka, Topics.LABELS, len(TEXTS), 180)
        labels = [decode(TeacherLabel, r.value) for r in records]
        ids = [t.teacher_id for t, _ in labeler.teacher.members]  # type: ignore[union-attr]
        trust = _members_mixed_by_people(records, labels, ids, task, tmp_path)
        trust_report.save(tmp_path, trust)  # as the round does: the labeler follows it
        _send(kafka, TEXTS, "ens2")
        later = _wait(kafka, Topics.LABELS, 2 * len(TEXTS), 180)
    finally:
        labeler.stop()
        thread.join(timeout=30)
    shares = {m.source: m.share or 0.0 for m in trust.members}
    remixed = [decode(TeacherLabel, r.value) for r in later]
    remixed = [lab for lab in remixed if lab.request_id.startswith("ens2-")]
    assert len(remixed) == len(TEXTS)
    for lab in remixed:
        assert lab.teacher_id == labels[0].teacher_id and lab.members is not None
        logs = [np.log(np.asarray(m.probs))[None, :] for m in lab.members]
        mixed = mix(logs, [shares[i] for i in ids], np.ones((2, 1), dtype=bool))[0]
        np.testing.assert_allclose(lab.teacher_probs, softmax(mixed), atol=1e-4)
    assert abs(shares[ids[0]] - 0.5) > 1e-3  # the measured mix is not the task file's again


def _members_mixed_by_people(
    records: list[bus.Record], labels: list[TeacherLabel], ids: list[str], task: Task, tmp: Path
) -> TrustModel:
    """Both members' answers on every label, mixed half and half by the labeler; the round's
    rows mixed by the shares measured on human labels (and not before ``ensemble_min_labels``);
    returns the round's trust estimate."""
    assert ids[0].startswith("llm:") and ids[1].startswith("embedding:")
    for lab in labels:
        assert lab.members is not None and [m.teacher_id for m in lab.members] == ids
        logs = [np.log(np.asarray(m.probs))[None, :] for m in lab.members]
        mixed = mix(logs, [0.5, 0.5], np.ones((2, 1), dtype=bool))[0]
        np.testing.assert_allclose(lab.teacher_probs, softmax(mixed), atol=1e-4)
    store = tmp / "store"
    store.mkdir()
    for record, lab in zip(records, labels, strict=True):
        write_shard(store, "labels", [to_row(record, lab)])
    truth = {text: ["positive", "negative"][i % 2] for i, text in enumerate(TEXTS)}
    feedback = pd.DataFrame(
        [{"request_id": lab.request_id, "ts": lab.ts + 1, "rating": 1, "key_id": None,
          "corrected_label": truth[lab.text], "predicted_label": "positive", "model_version": 1}
         for lab in labels]
    )  # fmt: skip
    trust = TrustSettings(ensemble_min_labels=len(TEXTS))
    out = human_labels.apply(read_labels(store), feedback, task, trust, 3600.0)
    assert out.trust is not None and [m.source for m in out.trust.members] == sorted(ids)
    shares = {m.source: m.share for m in out.trust.members}
    assert all(s is not None for s in shares.values())
    assert abs(sum(s or 0.0 for s in shares.values()) - 1) < 1e-3
    for row in out.rows.itertuples():
        got = {m["teacher_id"]: np.log(np.asarray(m["probs"]))[None, :] for m in row.members}
        mixed = mix([got[i] for i in ids], [shares[i] or 0.0 for i in ids], np.ones((2, 1), bool))
        np.testing.assert_allclose(row.teacher_probs, softmax(mixed)[0], atol=1e-6)
    held = human_labels.apply(
        read_labels(store), feedback, task, TrustSettings(ensemble_min_labels=100), 3600.0
    )
    as_sent = {lab.request_id: lab.teacher_probs for lab in labels}  # the labeler's own mix
    for row in held.rows.itertuples():
        np.testing.assert_allclose(row.teacher_probs, as_sent[row.request_id], atol=1e-6)
    return out.trust
