"""Serving decode for many chats at once: every open reply of a replica advances by one token in
the same llama.cpp forward pass (continuous batching: Yu et al. 2022, "Orca"), on the version's
``student.gguf``.

One step reads the weights once for all open replies, so a replica's tokens/s grows with its
streams while one stream's shrinks less: 40.9 tokens/s for one reply, 55.2 for two, 80.6 for
four and 102.6 for eight on one thread here (SmolLM2-135M Q8_0, 50-token prompts, greedy;
measured before this module by a loop over ``llama_decode``; ``bench.generate_batch`` has the
served figures). How each is made:

- A new chat waits until a sequence id is free and its prompt plus ``most`` reply tokens fit
  the context that is not promised to the open replies (one KV cache for all of them:
  ``kv_unified``), so a step never runs out of cells.
- Its prompt is fed in chunks of at most ``chunk`` tokens a step, beside the open replies'
  next tokens, so a long prompt slows the others' steps without stopping them.
- The next token is chosen from its row of logits by the reply's own ``Sampling`` picker, as
  in ``models.llama_decoder``; a reply ends at an end-of-turn id, after ``most`` tokens, or when
  its reader closes, and its cells are freed at once.
- A new reply starts from the cells of the prefix its prompt shares with the last prompt fed
  (llama.cpp's ``parallel`` example shares a system prompt so), so the task's system prompt
  and the chat template's opening are evaluated once, not once a chat.
- The step loop runs on a thread of its own while any reply is open or waiting, and ends
  when none is, so an unloaded version (a hot swap) is freed once its last reply ends.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.generator import Sampling, Tokens

_END = object()  # after a reply's last token, so a reader never waits on a finished reply


@dataclass(eq=False)
class _Reply:
    """One chat's decoding: its prompt, how far it has been fed, and where its tokens go."""

    prompt: list[int]
    pick: Any  # ``Sampling.picker``: (logits (V,), tokens made) → token id
    ends: set[int]
    most: int
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    seq: int = -1  # llama.cpp's sequence id while it holds one
    fed: int = 0  # tokens of ``prompt`` + ``made`` evaluated so far (the next position)
    made: list[int] = field(default_factory=list)
    closed: bool = False  # the reader went away

    @property
    def reserved(self) -> int:
        return len(self.prompt) + self.most

    def pending(self) -> list[int]:
        """Tokens to evaluate next: the rest of the prompt, or the last token made."""
        if self.fed < len(self.prompt):
            return self.prompt[self.fed :]
        return self.made[-1:]


class BatchDecoder:
    """A ``models.generator.Decoder`` for up to ``streams`` replies at once, safe to call from
    several threads (``concurrent``); ``threads`` for each forward pass."""

    concurrent = True

    def __init__(
        self,
        path: Path,
        threads: int = 1,
        streams: int = 8,
        chunk: int = 64,
        on_step: Callable[[int], None] = lambda chats: None,
        context: int = 0,
    ) -> None:
        """``on_step``: told after each step how many chats it chose a token for; ``context``:
        the KV cells all chats share (0: the model's training context)."""
        import llama_cpp

        if not path.is_file():
            raise FileNotFoundError(f"no GGUF at {path}: export it (models.gguf_export.export)")
        self._l = llama_cpp
        self.path, self.streams, self.chunk, self.on_step = path, streams, chunk, on_step
        llama_cpp.llama_backend_init()
        self._model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
        if not self._model:
            raise ValueError(f"llama.cpp could not load {path}")
        self.n_vocab = int(
            llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model))
        )
        self._context = context or int(llama_cpp.llama_model_n_ctx_train(self._model))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified = self._context, streams + 1, True
        params.n_batch = params.n_ubatch = chunk + streams
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as ``Llama``'s default
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ValueError(f"llama.cpp could not make a context for {path}")
        self._batch = llama_cpp.llama_batch_init(chunk + streams, 0, 1)
        self._cond = threading.Condition()
        self._waiting: deque[_Reply] = deque()
        self._open: list[_Reply] = []
        self._free = list(range(streams))
        self._prefix: list[int] = []  # the last prompt fed, kept in sequence ``streams``
        self._thread: threading.Thread | None = None
        # forward passes, and the next tokens they chose (their ratio: the batch's width)
        self.steps = self.decided = 0

    @property
    def context(self) -> int:
        return self._context

    def idle(self) -> bool:
        """No reply open or waiting, and no step loop running."""
        with self._cond:
            return self._thread is None and not self._open and not self._waiting

    def cells(self, seq: int) -> int:
        """KV cells ``seq`` holds (the prefix's: ``streams``)."""
        return int(self._l.llama_memory_seq_pos_max(self._memory(), seq)) + 1

    def tokens(self, prompt: list[int], sampling: Sampling, ends: set[int], most: int) -> Tokens:
        if len(prompt) + most > self._context:
            raise ValueError(
                f"{len(prompt)} prompt tokens and {most} to make: over the context of "
                f"{self._context}"
            )
        reply = _Reply(list(prompt), sampling.picker(ends), ends, most)
        with self._cond:
            self._waiting.append(reply)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-decode", daemon=True)
                self._thread.start()
        try:
            while (item := reply.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            with self._cond:
                reply.closed = True

    def _run(self) -> None:
        """Steps until no reply is open or waiting."""
        while True:
            with self._cond:
                self._retire()
                self._admit()
                if not self._open:
                    self._thread = None
                    return
                fed, rows = self._fill()
            try:
                self._step(rows)
            except Exception as exc:  # every reply in the step gets the error, not a hang
                with self._cond:
                    for reply in fed:
                        reply.out.put(exc)
                        reply.closed = True

    def _retire(self) -> None:
        """Free the cells and ids of replies that ended or lost their reader."""
        for reply in [r for r in self._open if r.closed]:
            self._l.llama_memory_seq_rm(self._memory(), reply.seq, -1, -1)
            self._free.append(reply.seq)
            self._open.remove(reply)
        self._waiting = deque(r for r in self._waiting if not r.closed)

    def _admit(self) -> None:
        """Open waiting replies, oldest first, while ids and unpromised context last. A reply
        starts from the cells of the prefix its prompt shares with the last prompt fed (a
        task's system prompt opens every chat), shared, not copied; its last prompt token is
        always evaluated, for the logits of its first reply token. A chat that fits the context
        only without the kept prefix gets it dropped once nothing else is open (``tokens``
        refuses any that cannot fit at all, so none waits forever)."""
        head = self._waiting[0].reserved if self._waiting else 0
        if not self._open and self._prefix and len(self._prefix) + head > self._context:
            self._l.llama_memory_seq_rm(self._memory(), self.streams, -1, -1)
            self._prefix = []
        promised = len(self._prefix) + sum(r.reserved for r in self._open)
        while (
            self._waiting and self._free and promised + self._waiting[0].reserved <= self._context
        ):
            reply = self._waiting.popleft()
            reply.seq = self._free.pop()
            promised += reply.reserved
            reply.fed = shared_prefix(self._prefix, reply.prompt[:-1])
            if reply.fed:
                self._l.llama_memory_seq_cp(self._memory(), self.streams, reply.seq, 0, reply.fed)
            self._open.append(reply)

    def _keep_prefix(self, reply: _Reply) -> None:
        """``reply``'s prompt, just fed, becomes the prefix the next chats may start from."""
        memory = self._memory()
        self._l.llama_memory_seq_rm(memory, self.streams, -1, -1)
        self._l.llama_memory_seq_cp(memory, reply.seq, self.streams, 0, len(reply.prompt))
        self._prefix = reply.prompt

    def _memory(self) -> Any:
        return self._l.llama_get_memory(self._ctx)

    def _fill(self) -> tuple[list[_Reply], list[tuple[_Reply, int]]]:
        """The step's batch: each decoding reply's last token, then prompt chunks while the
        ``chunk`` budget lasts. Returns the replies in the batch, and (reply, batch row of its
        logits) for those whose next token this step decides."""
        batch, fed, rows, budget = self._batch, [], [], self.chunk
        batch.n_tokens = 0
        for reply in sorted(self._open, key=lambda r: r.fed < len(r.prompt)):  # decoding first
            prompting = reply.fed < len(reply.prompt)
            pending = reply.pending()[:budget] if prompting else reply.pending()
            budget -= len(pending) if prompting else 0
            if not pending:
                continue
            decides = reply.fed + len(pending) >= len(reply.prompt)  # no prompt left after it
            for i, token in enumerate(pending):
                k = batch.n_tokens
                batch.token[k], batch.pos[k] = token, reply.fed + i
                batch.n_seq_id[k], batch.seq_id[k][0] = 1, reply.seq
                batch.logits[k] = decides and i == len(pending) - 1
                batch.n_tokens += 1
            reply.fed += len(pending)
            fed.append(reply)
            if decides:
                rows.append((reply, batch.n_tokens - 1))
        return fed, rows

    def _step(self, rows: list[tuple[_Reply, int]]) -> None:
        """One forward pass, then each reply's next token from its row of logits."""
        code = self._l.llama_decode(self._ctx, self._batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code} for {self._batch.n_tokens} tokens")
        self.steps, self.decided = self.steps + 1, self.decided + len(rows)
        self.on_step(len(rows))
        for reply, row in rows:
            if not reply.made:
                self._keep_prefix(reply)
            pointer = self._l.llama_get_logits_ith(self._ctx, row)
            logits = torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)))
            token = reply.pick(logits, len(reply.made))
            reply.made.append(token)
            reply.out.put(token)
            if token in reply.ends or len(reply.made) >= reply.most:
                reply.out.put(_END)
                with self._cond:
                    reply.closed = True

    def __del__(self) -> None:
        bindings, batch = getattr(self, "_l", None), getattr(self, "_batch", None)
        if bindings is None:
            return
        if batch is not None:
            bindings.llama_batch_free(batch)
        if getattr(self, "_ctx", None):
            bindings.llama_free(self._ctx)
        if getattr(self, "_model", None):
            bindings.llama_model_free(self._model)


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common (the cells a new prompt can
    reuse: here, and in ``models.llama_decoder``)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
