"""A teacher's answer to a batch of sampled predictions, as label events.

The labeler (``services.labeler``) and the bootstrap (``training.cycle.seed_rows``) both turn a
``Teacher``'s ``TeacherBatch`` into ``TeacherLabel`` events here, so a seed label and a live one
carry the same fields; an answer the teacher gave that cannot be read becomes a dead letter with
its raw text (the caller sends it). ``parse_batch`` decodes and dedupes a polled batch;
``Recent`` remembers the request ids already labelled.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from distillery import bus
from distillery.events import (
    ChatTurn,
    DecodeError,
    MemberAnswer,
    SampledPrediction,
    TeacherLabel,
    decode,
)
from distillery.task import Task
from models.responder import Responder
from models.teacher import Teacher, TeacherBatch, TeacherCost


@dataclass
class Labelled:
    """A batch's outcome: its labels, the records whose answer could not be read (with the raw
    answer), and what the teacher call cost."""

    labels: list[TeacherLabel]
    unreadable: list[tuple[bus.Record, str]]
    cost: TeacherCost


def to_labels(
    batch: list[tuple[bus.Record, SampledPrediction]],
    task: Task,
    teacher: Teacher,
    with_states: bool = False,
) -> Labelled:
    """The teacher's label for each sampled prediction; ``with_states`` also carries its
    sentence embedding (H,) for the student's hidden-state loss, if the teacher has one."""
    answer = teacher.label([event.text for _, event in batch], with_states)  # (B, C)
    states = answer.states if with_states else None  # (B, H) or None
    labels = [
        TeacherLabel(
            request_id=event.request_id,
            text=event.text,
            labels=task.label_names,
            teacher_logits=[float(x) for x in answer.logits[i]],
            teacher_probs=[float(x) for x in answer.probs[i]],
            student_probs=event.student_probs,
            model_version=event.model_version,
            source_partition=record.partition,
            source_offset=record.offset,
            predicted_at=event.ts,
            reason=event.reason,
            shadow_version=event.shadow_version,
            shadow_probs=event.shadow_probs,
            teacher_embedding=None if states is None else [float(x) for x in states[i]],
            teacher_id=teacher.teacher_id,
            members=member_answers(answer, i),
        )
        for i, (record, event) in enumerate(batch)
        if i not in answer.unreadable
    ]
    return Labelled(
        labels, _dead(batch, teacher.teacher_id, "answer", answer.unreadable), answer.cost
    )


def member_answers(answer: TeacherBatch, row: int) -> list[MemberAnswer] | None:
    """Row ``row``'s answer from each ensemble member that could read it (None: no ensemble)."""
    if not answer.members:
        return None
    return [
        MemberAnswer(teacher_id=m.teacher_id, probs=[float(x) for x in m.probs[row]])
        for m in answer.members
        if m.readable[row]
    ]


def answer_batch(
    batch: list[tuple[bus.Record, SampledPrediction]],
    task: Task,
    teacher: Teacher | Responder,
    with_states: bool = False,
) -> Labelled:
    """``to_replies`` for a generate task's responder, ``to_labels`` for a classifier's teacher."""
    if isinstance(teacher, Responder):
        return to_replies(batch, task, teacher)
    return to_labels(batch, task, teacher, with_states)


def to_replies(
    batch: list[tuple[bus.Record, SampledPrediction]], task: Task, teacher: Responder
) -> Labelled:
    """The teacher's reply to each sampled chat (the chat the student answered, or the task's
    system prompt and the text), as label events with no probabilities."""
    if task.generate is None:
        raise ValueError(f"task {task.name!r} is kind {task.kind!r}: it has no replies")
    system = ChatTurn(role="system", content=task.generate.system_prompt)
    chats = [
        list(event.messages or [system, ChatTurn(role="user", content=event.text)])
        for _, event in batch
    ]
    answer = teacher.respond(chats)
    labels = [
        TeacherLabel(
            request_id=event.request_id,
            text=event.text,
            labels=[],
            teacher_logits=[],
            teacher_probs=[],
            student_probs=[],
            model_version=event.model_version,
            source_partition=record.partition,
            source_offset=record.offset,
            predicted_at=event.ts,
            reason=event.reason,
            teacher_id=teacher.teacher_id,
            reply=response.text,
            student_reply=event.reply,
            messages=chat,
            shadow_version=event.shadow_version,
            shadow_reply=event.shadow_reply,
        )
        for (record, event), response, chat in zip(batch, answer.responses, chats, strict=True)
        if response is not None
    ]
    return Labelled(
        labels, _dead(batch, teacher.teacher_id, "reply", answer.unreadable), answer.cost
    )


def _dead(
    batch: list[tuple[bus.Record, SampledPrediction]], teacher_id: str, what: str,
    unreadable: dict[int, str],
) -> list[tuple[bus.Record, str]]:  # fmt: skip
    """(record, reason with the raw answer) for each row the teacher's answer left unreadable."""
    return [
        (batch[i][0], f"teacher {teacher_id} {what} unreadable: {raw}"[:4_000])
        for i, raw in sorted(unreadable.items())
    ]


def parse_batch(
    records: list[bus.Record], n_labels: int
) -> tuple[list[tuple[bus.Record, SampledPrediction]], list[tuple[bus.Record, str]]]:
    """Split records into (record, event) to label, deduped by request id, and (record, reason)."""
    good: dict[str, tuple[bus.Record, SampledPrediction]] = {}
    bad: list[tuple[bus.Record, str]] = []
    for record in records:
        try:
            event = decode(SampledPrediction, record.value)
        except DecodeError as exc:
            bad.append((record, str(exc)))
            continue
        if len(event.student_probs) != n_labels:
            reason = f"student_probs has {len(event.student_probs)} values, task has {n_labels}"
            bad.append((record, reason))
            continue
        good.setdefault(event.request_id, (record, event))
    return list(good.values()), bad


class Recent:
    """A bounded set of request ids, oldest forgotten first."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, request_id: str) -> None:
        self._ids[request_id] = None
        self._ids.move_to_end(request_id)
        while len(self._ids) > self.maxsize:
            self._ids.popitem(last=False)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
