"""The generative task's parts on the real models: SmolLM2-135M-Instruct (the student, from its
GGUF) streams exactly what it replies and honours stop strings, on transformers and, exported
back to GGUF, on llama.cpp; fine-tuning on a reply raises its
likelihood; the teacher (Qwen2.5 through the real llama.cpp server) writes replies with a
teacher id that names its prompt."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from distillery import bus
from distillery.events import ChatTurn, DeadLetter, SampledPrediction, TeacherLabel, Topics, decode
from distillery.settings import KafkaSettings, PathSettings, Settings, TeacherSettings
from distillery.task import load_task
from models.factory import llm_responder
from models.generator import Generator, Sampling, chat
from models.gguf import local_gguf, student_gguf
from models.gguf_export import GGUF_FILE, export
from models.llama_decoder import LlamaDecoder, served_generator
from services.broker import EmbeddedBroker
from services.labeler import Labeler
from services.llm_server import LocalLLM
from tests.conftest import DATA, ROOT
from training.chrf import chrf
from training.sft import Lora, Pairs, Preference, fine_tune, reply_logps, sft_batch

pytestmark = pytest.mark.integration
TASK = load_task(ROOT / "tasks" / "reply.yaml")
SYSTEM = TASK.generate.system_prompt if TASK.generate else ""
MESSAGE = "The charger stopped working after two days. Very disappointed."


@pytest.fixture(scope="module")
def student() -> Generator:
    torch.manual_seed(0)
    return Generator.from_gguf(student_gguf(DATA))


@pytest.fixture(scope="module")
def llm() -> Iterator[LocalLLM]:
    with LocalLLM(local_gguf(DATA)) as server:
        yield server


def test_the_stream_is_the_reply_and_a_stop_string_ends_it(student: Generator) -> None:
    messages = chat(SYSTEM, MESSAGE)
    whole = student.reply(messages, 24)
    pieces = list(student.stream(messages, 24))
    assert "".join(p.text for p in pieces) == whole.text and len(pieces) > 2
    assert pieces[-1].finish_reason == whole.finish_reason and whole.completion_tokens <= 24
    assert whole.first_token_s < whole.seconds
    stop = whole.text[6:10]  # greedy: the same reply, cut where the stop string begins
    cut = student.reply(messages, 24, [stop])
    assert cut.text == whole.text[: whole.text.find(stop)] and cut.finish_reason == "stop"
    short = student.reply(messages, 3)
    assert short.completion_tokens == 3 and short.finish_reason == "length"


def test_the_exported_gguf_serves_on_llama_cpp_the_replies_transformers_gives(
    tmp_path: Path,
) -> None:
    base = student_gguf(DATA)
    reference = Generator.from_gguf(base)  # its own copy: the module's student is fine-tuned
    reference.save(tmp_path)
    export(reference.model, base, tmp_path / GGUF_FILE)
    served = served_generator(tmp_path, "llama.cpp", 1, DATA)
    assert isinstance(served.decoder, LlamaDecoder)
    assert TASK.generate is not None
    said = (MESSAGE, "Great screen, battery lasts all day, would buy again!", MESSAGE)
    chats = [chat(SYSTEM, TASK.generate.prompt(m)) for m in said]
    for messages in chats:  # the 2nd and 3rd reuse the KV cache of the shared system prompt
        want, got = reference.reply(messages, 32), served.reply(messages, 32)
        assert chrf(got.text, want.text) > 90, (got.text, want.text)  # Q8_0 against fp32
    assert served.reply(chats[0], 32).text == served.reply(chats[0], 32).text
    whole = served.reply(chats[0], 32)
    stop = whole.text[6:10]
    cut = served.reply(chats[0], 32, [stop])
    assert cut.text == whole.text[: whole.text.find(stop)] and cut.finish_reason == "stop"
    assert "".join(p.text for p in served.stream(chats[1], 16)) == served.reply(chats[1], 16).text
    seeded = Sampling(temperature=0.9, top_p=0.9, seed=7, min_new_tokens=12)
    drawn = [served.reply(chats[1], 16, sampling=seeded) for _ in range(2)]
    assert drawn[0].text == drawn[1].text and drawn[0].completion_tokens >= 12
    (tmp_path / GGUF_FILE).unlink()  # a version registered before the export: made at load
    again = served_generator(tmp_path, "llama.cpp", 1, DATA)
    assert (tmp_path / GGUF_FILE).is_file() and again.reply(chats[0], 32).text == whole.text


def test_fine_tuning_on_a_reply_raises_its_likelihood(student: Generator) -> None:
    said = (MESSAGE, "Love this camera, sharp pictures!", "Arrived late and the box was crushed.")
    chats = [chat(SYSTEM, f"Reply to this customer message in one sentence:\n\n{m}") for m in said]
    replies = [
        "We're sorry the charger failed; we'll send you a replacement today.",
        "Thank you, we're glad you love the camera!",
        "We're sorry your order arrived late and damaged; a refund is on its way.",
    ]
    batch = sft_batch(student, chats, replies)
    before = reply_logps(student, batch)
    losses = fine_tune(student, chats, replies, epochs=4, batch_size=3, lr=1e-4)
    after = reply_logps(student, batch)
    assert losses[-1] < losses[0]
    assert bool((after > before + 1.0).all()), (before, after)
    learnt = student.reply(chats[0], 32)
    assert chrf(learnt.text, replies[0]) > 60, learnt.text


def test_lora_adapters_train_and_are_merged_into_the_same_model() -> None:
    """Only the adapters train (the frozen weights move only when they are merged), and the
    result is the plain transformers model, exportable as any version."""
    torch.manual_seed(0)
    student = Generator.from_gguf(student_gguf(DATA))
    model, norm = student.model, student.model.model.norm.weight.detach().clone()
    q = student.model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    chats = [chat(SYSTEM, f"Reply to this customer message in one sentence:\n\n{MESSAGE}")]
    reply = ["We're sorry the charger failed; we'll send you a replacement today."]
    before = reply_logps(student, sft_batch(student, chats, reply))
    losses = fine_tune(student, chats, reply, epochs=4, batch_size=1, lr=1e-3, lora=Lora(rank=4))
    after = reply_logps(student, sft_batch(student, chats, reply))
    assert student.model is model and type(model).__name__ == "LlamaForCausalLM"
    assert losses[-1] < losses[0] and bool((after > before + 1.0).all()), (before, after)
    assert torch.equal(model.model.norm.weight, norm)  # no adapter there: untouched
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, q)  # merged in
    assert all(p.requires_grad for p in model.parameters())


def test_the_teacher_replies_with_an_id_that_names_its_prompt(llm: LocalLLM) -> None:
    teacher = llm_responder(TeacherSettings(kind="llm", url=llm.url), TASK)
    try:
        assert TASK.generate is not None
        prompts = [TASK.generate.prompt(MESSAGE), TASK.generate.prompt("Best purchase ever!")]
        chats = [chat(SYSTEM, p) for p in prompts]
        first, again = teacher.respond(chats), teacher.respond(chats[:1])
    finally:
        teacher.close()
    assert teacher.teacher_id.startswith("llm-gen:qwen2.5-coder-0.5b-instruct-q4:")
    assert not first.unreadable and all(r is not None and r.text for r in first.responses)
    assert first.responses[0] == again.responses[0]  # temperature 0: one answer per prompt
    assert first.cost.completion_tokens > 0 and first.cost.requests == 2
    assert all(r is not None and r.finish_reason in {"stop", "length"} for r in first.responses)


def test_the_labeler_answers_sampled_chats_and_dead_letters_what_it_cannot(
    llm: LocalLLM, tmp_path: Path
) -> None:
    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        settings = Settings(
            kafka=kafka,
            paths=PathSettings(state_dir=tmp_path, task_file=ROOT / "tasks" / "reply.yaml"),
            teacher=TeacherSettings(kind="llm", url=llm.url, batch_wait_s=0.2),
        )
        labeler = Labeler(settings, TASK)
        thread = threading.Thread(target=labeler.run, daemon=True)
        thread.start()
        try:
            _send(kafka)
            labels = _wait(kafka, Topics.LABELS, 1)
            dead = _wait(kafka, Topics.DEAD_LETTER, 2)
        finally:
            labeler.stop()
            thread.join(timeout=60)
    label = decode(TeacherLabel, labels[0].value)
    assert label.request_id == "chat-0" and label.reply and label.student_reply == "Sorry."
    assert label.teacher_id is not None and label.teacher_id.startswith("llm-gen:")
    reasons = {decode(DeadLetter, r.value).reason for r in dead}
    assert "student_probs has 2 values, task has 0" in reasons  # a classifier's event
    unread = next(r for r in reasons if r.startswith("teacher "))  # past the server's context
    assert "reply unreadable: rejected: HTTP 400" in unread, reasons


def _send(kafka: KafkaSettings) -> None:
    turns = [ChatTurn(role="system", content=SYSTEM), ChatTurn(role="user", content=MESSAGE)]
    long = [ChatTurn(role="user", content="word " * 5_000)]  # over the 2,048-token context
    events = [
        SampledPrediction(request_id="chat-0", text=MESSAGE, student_probs=[], model_version=1,
                          messages=turns, reply="Sorry."),
        SampledPrediction(request_id="chat-1", text="x", student_probs=[], model_version=1,
                          messages=long, reply="?"),
        SampledPrediction(request_id="chat-2", text="x", student_probs=[0.5, 0.5], model_version=1),
    ]  # fmt: skip
    producer = bus.make_producer(kafka)
    for event in events:
        bus.send(producer, Topics.SAMPLED, event, event.request_id)
    producer.flush()
    producer.close()


def _wait(kafka: KafkaSettings, topic: str, n: int, timeout_s: float = 120) -> list[bus.Record]:
    deadline = time.monotonic() + timeout_s
    while len(records := bus.read_all(kafka, topic)) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(records) >= n, f"{topic}: {len(records)} records, wanted {n}"
    return records


def test_a_dpo_term_moves_the_student_from_the_rejected_reply_to_the_chosen(
    student: Generator,
) -> None:
    """DPO (``training.sft.Preference``) on the real student: the chosen reply's likelihood over
    the rejected one's grows past where the round started, more than SFT on the chosen alone
    moves it (each from the same starting weights)."""
    chats = [chat(SYSTEM, f"Reply to this customer message in one sentence:\n\n{m}") for m in (
        MESSAGE, "Arrived late and the box was crushed.")]  # fmt: skip
    chosen = [
        "We're sorry the charger failed; we'll send you a replacement today.",
        "We're sorry your order arrived late and damaged; a refund is on its way.",
    ]
    rejected = ["Great! Enjoy your new charger!", "Thanks for your order, have a nice day!"]
    pairs = Pairs(chats, chosen, rejected)

    def margin_gain(dpo: bool) -> float:
        torch.manual_seed(0)
        arm = copy.deepcopy(student)  # both arms from the same weights
        preference = Preference.reference(arm, pairs, 1.0, 0.1)
        start = preference.ref_chosen - preference.ref_rejected  # (P,)
        fine_tune(arm, chats, chosen, epochs=2, batch_size=2, lr=5e-5,
                  preference=preference if dpo else None)  # fmt: skip
        after = Preference.reference(arm, pairs, 1.0, 0.1)
        return float((after.ref_chosen - after.ref_rejected - start).mean())

    sft_only, with_dpo = margin_gain(False), margin_gain(True)
    print(f"margin gain: SFT {sft_only:.2f}, SFT + DPO {with_dpo:.2f}")
    assert with_dpo > 0 and with_dpo > sft_only + 1.0, (sft_only, with_dpo)
