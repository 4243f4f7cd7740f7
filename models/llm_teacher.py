"""An LLM behind an OpenAI-compatible chat API as the teacher: soft labels from the logprobs of
the first answer token.

For each text: system = the task's instruction, the labels with their descriptions, and "Answer
with exactly one word: …" (or one letter); user = the text; ``max_tokens: 1, temperature: 0,
logprobs: true, top_logprobs: k``. The k alternatives of the first token are mapped to labels
(a token is a label's if, stripped and lower-cased, it begins that label's answer and no other's:
"Positive", " positive", "pos" all count for positive); each label's probability is the sum of
its variants, a label absent from the k gets the smallest listed probability (an upper bound on
what it had), and the vector is renormalised over the labels. If no alternative names a label
the answer is unreadable, and the labeler dead-letters it with the raw answer.

Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the label distribution the
model gives content-free inputs ("N/A", "", "[MASK]") is its prior; calibrated probabilities are
p / p_cf, renormalised. Measured per task (bench/teachers.py): it can help a many-label task and
hurt a two-label one, so the task file turns it on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from distillery.task import Task
from models.openai_api import ChatAnswer, OpenAIChat, RequestRejected
from models.teacher import TeacherBatch, TeacherCost, TeacherHealth, prompt_hash

PROMPT_TEMPLATE_VERSION = 1
CONTENT_FREE = ("N/A", "", "[MASK]")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PUNCTUATION = " \t\n.:,;!?\"'()[]*`-"


class TaskFileError(ValueError):
    """The task file cannot drive an LLM teacher (no instruction, clashing answers)."""


def answers(task: Task) -> list[str]:
    """What the model answers for each label, in label order."""
    if task.answers == "letters":
        if len(task.labels) > len(LETTERS):
            raise TaskFileError(f"answers: letters allows {len(LETTERS)} labels")
        return list(LETTERS[: len(task.labels)])
    return task.label_names


def system_prompt(task: Task) -> str:
    """The instruction, the labels (with descriptions), and the answer format."""
    if not task.instruction:
        raise TaskFileError(
            f"task {task.name!r} has no 'instruction': the LLM teacher needs one (a sentence "
            'saying what to label), e.g. instruction: "You label the sentiment of texts."'
        )
    said = answers(task)
    lines = [task.instruction.strip(), "", "Labels:"]
    for answer, label in zip(said, task.labels, strict=True):
        shown = f"{answer}: {label.name}" if task.answers == "letters" else answer
        lines.append(f"- {shown}" + (f": {label.description}" if label.description else ""))
    unit = "letter" if task.answers == "letters" else "word"
    lines += ["", f"Answer with exactly one {unit}: {', '.join(said[:-1])} or {said[-1]}."]
    return "\n".join(lines)


def llm_teacher_id(model: str, task: Task) -> str:
    """``llm:<model>:<prompt hash>``: the hash covers the prompt, the answers and calibration."""
    version = prompt_hash(
        PROMPT_TEMPLATE_VERSION, system_prompt(task), answers(task), task.calibrate
    )
    return f"llm:{model}:{version}"


def normalise(token: str) -> str:
    return token.strip(_PUNCTUATION).lower()


def label_of(token: str, said: list[str]) -> int | None:
    """The label a first token stands for, or None (no label, or more than one)."""
    norm = normalise(token)
    if not norm:
        return None
    hits = [i for i, answer in enumerate(said) if answer.lower().startswith(norm)]
    return hits[0] if len(hits) == 1 else None


def check_first_tokens(said: list[str], first_token: Callable[[str], int]) -> None:
    """Every answer must begin with its own first token (with and without a leading space, as
    the model may emit either); raises ``TaskFileError`` naming the clash."""
    seen: dict[int, str] = {}
    for answer in said:
        for variant in (answer, " " + answer, answer.capitalize()):
            token = first_token(variant)
            other = seen.get(token)
            if other is not None and other != answer:
                raise TaskFileError(
                    f"labels {other!r} and {answer!r} begin with the same token ({token}) for "
                    "this model, so its logprobs cannot tell them apart: rename one, or set "
                    "'answers: letters' in the task file"
                )
            seen[token] = answer


def check_prefixes(said: list[str]) -> None:
    """Without the model's tokenizer: refuse answers one of which begins another, or that share
    their first three letters (their first tokens are then likely the same)."""
    lowered = [a.lower() for a in said]
    for i, a in enumerate(lowered):
        for b in lowered[i + 1 :]:
            if a.startswith(b) or b.startswith(a) or a[:3] == b[:3]:
                raise TaskFileError(
                    f"labels {a!r} and {b!r} begin alike, so the LLM's first answer token may "
                    "not tell them apart: rename one, or set 'answers: letters' in the task file"
                )


def soft_label(top: list[tuple[str, float]], said: list[str]) -> np.ndarray | None:
    """(C,) probabilities from first-token alternatives, or None if none names a label."""
    mass = np.zeros(len(said), dtype=np.float64)
    for token, logprob in top:
        index = label_of(token, said)
        if index is not None:
            mass[index] += math.exp(logprob)
    if not mass.any():
        return None
    floor = min(math.exp(lp) for _, lp in top)
    mass[mass == 0] = floor
    return mass / mass.sum()


def calibrated(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Contextual calibration: probs (C,) or (B, C) divided by the content-free prior (C,),
    renormalised per row."""
    scaled = probs / np.clip(prior, 1e-6, None)
    result: np.ndarray = scaled / scaled.sum(-1, keepdims=True)
    return result


@dataclass(frozen=True)
class LLMOptions:
    top_logprobs: int = 10
    max_text_chars: int = 2_000


class LLMTeacher:
    """The ``Teacher`` protocol over ``OpenAIChat``; texts of a batch go out concurrently (the
    client bounds how many are in flight)."""

    def __init__(
        self, chat: OpenAIChat, task: Task, concurrency: int, options: LLMOptions | None = None
    ) -> None:
        self.chat = chat
        self.task = task
        self.options = options or LLMOptions()
        self.said = answers(task)
        self.system = system_prompt(task)
        self._id = llm_teacher_id(chat.model, task)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="llm-teacher")
        self.prior: np.ndarray | None = None  # (C,) content-free label distribution

    @property
    def teacher_id(self) -> str:
        return self._id

    @property
    def has_states(self) -> bool:
        return False

    def health(self) -> TeacherHealth:
        return self.chat.breaker.health()

    def calibrate(self) -> np.ndarray:
        """Measure the content-free prior (three requests) and use it from now on."""
        answers_ = [self.ask(text) for text in CONTENT_FREE]
        rows = [soft_label(a.top_logprobs, self.said) for a in answers_]
        known = [r for r in rows if r is not None]
        if not known:
            raise TaskFileError("calibration: the model named no label for content-free inputs")
        self.prior = np.mean(known, axis=0)
        return self.prior

    def ask(self, text: str) -> ChatAnswer:
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": text[: self.options.max_text_chars]},
        ]
        return self.chat.chat(
            messages,
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=self.options.top_logprobs,
        )

    def _one(self, text: str) -> ChatAnswer | str:
        try:
            return self.ask(text)
        except RequestRejected as exc:
            return f"rejected: {exc}"

    def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
        start = time.perf_counter()
        results = list(self._pool.map(self._one, texts))  # raises TeacherUnavailable
        n = len(self.said)
        probs = np.full((len(texts), n), 1.0 / n)
        unreadable: dict[int, str] = {}
        cost = TeacherCost()
        for i, result in enumerate(results):
            if isinstance(result, str):
                unreadable[i] = result
                continue
            cost.add(_cost_of(result))
            row = soft_label(result.top_logprobs, self.said)
            if row is None:
                unreadable[i] = f"no label among the answer's first tokens: {result.raw}"
                continue
            probs[i] = self._calibrated(row)
        cost.seconds = time.perf_counter() - start
        logits = np.log(np.clip(probs, 1e-12, None)).astype(np.float32)
        return TeacherBatch(probs.astype(np.float32), logits, None, unreadable, cost)

    def _calibrated(self, row: np.ndarray) -> np.ndarray:
        if not self.task.calibrate or self.prior is None:
            return row
        return calibrated(row, self.prior)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.chat.close()


def _cost_of(answer: ChatAnswer) -> TeacherCost:
    return TeacherCost(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        requests=1 + answer.retries,
        retries=answer.retries,
        request_seconds=[answer.seconds],
    )
