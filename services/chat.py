"""``POST /v1/chat/completions`` for a ``kind: generate`` task: the student writes the reply, as
OpenAI's chat API does, whole or streamed as server-sent events.

- The version is pinned per request: the generator is taken from the stable slot once, at the
  start, so a stream that began on one version finishes on it while a hot swap replaces the
  slot (``services.slots``); every chunk names that version.
- A replica decodes up to ``DISTILLERY_SERVE_GENERATE_STREAMS`` replies together, one forward
  pass per step for all of them (``models.batch_decoder``), on a pool of threads of its own;
  a decoder that cannot (one stream, or transformers) takes one reply at a time (``_lock``).
- A chat without its own system message gets the task's; the teacher answers the same chat.
- After the reply, the chat and the student's reply are offered to the sampler
  (``SampledPrediction`` with ``messages`` and ``reply``), off the request path.
- During a rollout's shadow, ``pick`` marks a share of chats for the candidate too: once the
  user has the stable version's reply, the candidate answers the same chat unseen, and the
  sampled chat carries both replies (``shadow_reply``), so the teacher's reply to it judges
  each (``training.rollout.teacher_evidence``).
- During a rollout's canary, ``pick`` gives a share of chats (sticky by the chat's ``user``) to
  the candidate; each reply's time and any failure go to the rollout's counts
  (``services.variants``), and a candidate that fails a whole reply is answered for by the
  stable version.
- A client that goes away stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from distillery.events import ChatTurn, SampledPrediction
from distillery.settings import Settings
from distillery.task import Task
from feedback.chat_models import (
    Answered,
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessageOut,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
    check_chat,
)
from feedback.tokens import sign
from models.generator import Counted, Generator, Piece, Reply, Sampling
from services.edge import json_response, parse

log = logging.getLogger(__name__)
REPLY_LABEL = "reply"  # what a generate answer's feedback token vouches for


@dataclass(frozen=True)
class Pinned:
    """The generator a request uses from start to end, and its version. ``canary``: a rollout's
    canary is live (its chats are sampled uniformly first: ``services.sampling``);
    ``fallback``: for the canary's candidate, the stable version, which answers a whole reply
    the candidate failed; ``shadow``: a candidate in shadow that answers the same chat once the
    user has the reply, unseen."""

    generator: Generator
    version: int
    canary: bool = False
    fallback: Pinned | None = None
    shadow: Pinned | None = None


Pick = Callable[[str | None], "Pinned | None"]  # the chat's ``user`` → who answers it
Record = Callable[[int, float, bool], None]  # (version, milliseconds, error): ``VariantStats``


class ChatRoute:
    def __init__(
        self,
        settings: Settings,
        task: Task,
        secret: bytes,
        offer: Callable[[SampledPrediction, bool], None],
        record: Record,
    ) -> None:
        if task.generate is None:
            raise ValueError(f"task {task.name!r} is kind {task.kind!r}: it has no chat route")
        self.settings = settings
        self.generate = task.generate
        self.secret = secret
        self.offer = offer
        self.record = record
        self._lock = threading.Lock()
        streams = settings.serve.generate_streams
        self._pool = ThreadPoolExecutor(max_workers=2 * streams + 2, thread_name_prefix="chat")

    async def complete(self, request: Request, pick: Pick, key_id: str) -> Response:
        """A chat's reply by the version ``pick`` chooses for its ``user`` (sticky in a canary),
        timed for the rollout's latency and error checks."""
        serve_cfg = self.settings.serve
        body = await parse(request, ChatRequest, serve_cfg.max_body_bytes)
        reason = check_chat(
            body, serve_cfg.max_messages, serve_cfg.max_text_chars, serve_cfg.max_new_tokens
        )
        if reason:
            raise HTTPException(422, reason)
        pinned = pick(body.user)
        if pinned is None:
            raise HTTPException(503, "no student loaded yet", headers={"Retry-After": "5"})
        job = _Job(
            self._chat(body.messages),
            body.token_bound(self.generate.max_new_tokens),
            body.stops() or list(self.generate.stop),
            Sampling(body.temperature, body.top_p, body.seed, body.min_tokens),
        )
        too_long = await asyncio.get_running_loop().run_in_executor(
            self._pool, pinned.generator.over_context, job.messages, job.max_new_tokens
        )
        if too_long:
            raise HTTPException(422, too_long)
        request_id = uuid.uuid4().hex
        if body.stream:
            answered, token = self._answered(request_id, pinned.version, key_id)
            done = self._done(body.allow_training, job, answered, key_id, pinned)
            stream = self._stream(pinned, job, answered, token, done)
            return StreamingResponse(stream, media_type="text/event-stream")
        reply, pinned = await self._whole(pinned, job)
        answered, token = self._answered(request_id, pinned.version, key_id)
        self._done(body.allow_training, job, answered, key_id, pinned)(reply.text)
        usage = Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                      total_tokens=reply.prompt_tokens + reply.completion_tokens)  # fmt: skip
        choice = Choice(
            message=ChatMessageOut(content=reply.text), finish_reason=reply.finish_reason
        )
        completion = ChatCompletion(
            **answered.model_dump(exclude={"feedback_token"}), feedback_token=token,
            choices=[choice], usage=usage,
        )  # fmt: skip
        return json_response(completion)

    def _answered(self, request_id: str, version: int, key_id: str) -> tuple[Answered, str]:
        answered = Answered(
            id=f"chatcmpl-{request_id}", model=f"student-v{version}", model_version=version,
            request_id=request_id,
        )  # fmt: skip
        return answered, sign(self.secret, request_id, version, REPLY_LABEL, key_id)

    def _done(
        self, allow_training: bool, job: _Job, answered: Answered, key_id: str, pinned: Pinned
    ) -> Callable[[str], None]:
        """Once the user has ``pinned``'s reply: the chat to the sampler, after a shadow's
        unseen reply to it where one is live (``_mirror``, off the request path)."""

        def done(reply: str) -> None:
            if not allow_training:
                return
            event = self._event(job, answered, key_id, reply)
            if pinned.shadow is None:
                self.offer(event, pinned.canary)
                return
            loop = asyncio.get_running_loop()
            self._pool.submit(self._mirror, pinned.shadow, job, event, loop)

        return done

    def _mirror(
        self, shadow: Pinned, job: _Job, event: SampledPrediction, loop: asyncio.AbstractEventLoop
    ) -> None:
        """The shadow's reply to the same chat, timed and counted for the rollout's checks; the
        chat goes to the sampler with both replies (without the shadow's if it failed)."""
        try:
            reply = self._recorded(shadow, job, time.perf_counter())
        except Exception:
            log.exception("shadow v%d failed a chat", shadow.version)
        else:
            update = {"shadow_version": shadow.version, "shadow_reply": reply.text}
            event = event.model_copy(update=update)
        try:
            loop.call_soon_threadsafe(self.offer, event, False)
        except RuntimeError:  # the replica's loop is closing: it is shutting down
            log.warning(
                "shadow v%d: a mirrored chat was not offered (shutting down)", shadow.version
            )

    async def _whole(self, pinned: Pinned, job: _Job) -> tuple[Reply, Pinned]:
        """The whole reply and who wrote it: a candidate that fails is counted and the stable
        version answers instead, so a broken canary costs users nothing."""
        try:
            reply = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._recorded, pinned, job, time.perf_counter()
            )
        except Exception:
            if pinned.fallback is None:
                raise
            log.exception("v%d failed a chat: v%d answers", pinned.version, pinned.fallback.version)
            return await self._whole(pinned.fallback, job)
        return reply, pinned

    def _recorded(self, pinned: Pinned, job: _Job, start: float) -> Reply:
        """``pinned``'s whole reply, its time since ``start`` (the request's wait for a thread
        included) or its failure counted for the rollout's checks (``record``)."""
        try:
            reply = self._reply(pinned, job)
        except Exception:
            self.record(pinned.version, 0.0, True)
            raise
        self.record(pinned.version, (time.perf_counter() - start) * 1000, False)
        return reply

    def _event(self, job: _Job, answered: Answered, key_id: str, reply: str) -> SampledPrediction:
        """The chat the student answered, and its reply, as the sampler takes it."""
        return SampledPrediction(
            request_id=answered.request_id, text=job.messages[-1].content, student_probs=[],
            model_version=answered.model_version, key_id=key_id, messages=job.messages,
            reply=reply,
        )  # fmt: skip

    def _chat(self, messages: list[ChatTurn]) -> list[ChatTurn]:
        if any(m.role == "system" for m in messages):
            return messages
        return [ChatTurn(role="system", content=self.generate.system_prompt), *messages]

    def _turn(self, generator: Generator) -> AbstractContextManager[object]:
        """What a reply holds while it decodes: nothing for a decoder that batches, else the
        route's one-at-a-time lock."""
        return nullcontext() if generator.decoder.concurrent else self._lock

    def _reply(self, pinned: Pinned, job: _Job) -> Reply:
        with self._turn(pinned.generator):
            return pinned.generator.reply(job.messages, job.max_new_tokens, job.stop, job.sampling)

    async def _stream(
        self, pinned: Pinned, job: _Job, answered: Answered, token: str,
        done: Callable[[str], None],
    ) -> AsyncIterator[bytes]:  # fmt: skip
        """``data: <chunk>`` per piece of text, a last chunk with the finish reason, usage and
        feedback token, then ``data: [DONE]``."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Piece | Counted | BaseException] = asyncio.Queue()
        cancel = threading.Event()
        head = answered.model_dump()

        def work() -> None:
            counted, start = Counted(), time.perf_counter()
            try:
                with self._turn(pinned.generator):
                    for piece in pinned.generator.stream(
                        job.messages, job.max_new_tokens, job.stop, counted, job.sampling
                    ):
                        loop.call_soon_threadsafe(queue.put_nowait, piece)
                        if cancel.is_set():
                            return
                loop.call_soon_threadsafe(queue.put_nowait, counted)
                self.record(pinned.version, (time.perf_counter() - start) * 1000, False)
            except BaseException as exc:  # the client gets an error event, not a cut stream
                self.record(pinned.version, 0.0, True)
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = loop.run_in_executor(self._pool, work)
        parts: list[str] = []
        finish = None
        try:
            yield _sse(
                ChatCompletionChunk(
                    **head, choices=[ChunkChoice(delta=Delta(role="assistant", content=""))]
                )
            )
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    yield b'data: {"error": {"message": "the student failed mid-reply"}}\n\n'
                    return
                if isinstance(item, Counted):
                    usage = Usage(prompt_tokens=item.prompt, completion_tokens=item.completion,
                                  total_tokens=item.prompt + item.completion)  # fmt: skip
                    last = ChunkChoice(delta=Delta(), finish_reason=finish or "stop")
                    yield _sse(ChatCompletionChunk(**{**head, "feedback_token": token},
                                                   choices=[last], usage=usage))  # fmt: skip
                    yield b"data: [DONE]\n\n"
                    done("".join(parts))
                    return
                finish = item.finish_reason or finish
                if item.text:
                    parts.append(item.text)
                    yield _sse(
                        ChatCompletionChunk(
                            **head, choices=[ChunkChoice(delta=Delta(content=item.text))]
                        )
                    )
        finally:
            cancel.set()
            await asyncio.shield(worker)


@dataclass(frozen=True)
class _Job:
    messages: list[ChatTurn]
    max_new_tokens: int
    stop: list[str]
    sampling: Sampling


def _sse(chunk: Any) -> bytes:
    return b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
