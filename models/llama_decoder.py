"""Serving decode on llama.cpp: a version's ``student.gguf`` (``models.gguf_export``) in process,
through llama-cpp-python's bindings, for the served student's tokens/s.

Only the forward pass moves: the prompt ids come from the version's own tokenizer and chat
template, and the next token is chosen from the logits by the same ``Sampling`` as in
transformers, so a served reply is the reply the gate measured (up to Q8_0 rounding). The KV
cache is kept from one reply to the next up to the longest shared prefix (``_eval_prompt``); one
reply at a time per decoder (the chat route's lock).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from models.batch_decoder import BatchDecoder, shared_prefix
from models.generator import Decoder, Generator, Sampling, Tokens
from models.gguf import student_gguf
from models.gguf_export import GGUF_FILE, export


class LlamaDecoder:
    """A ``models.generator.Decoder`` on a GGUF file, one reply at a time; ``threads`` for
    each forward pass."""

    concurrent = False

    def __init__(self, path: Path, threads: int = 1, n_ctx: int = 0) -> None:
        import llama_cpp

        if not path.is_file():
            raise FileNotFoundError(f"no GGUF at {path}: export it (models.gguf_export.export)")
        self._bindings = llama_cpp
        self.path = path
        self.llm: Any = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
            logits_all=False, verbose=False,
        )  # fmt: skip
        self.n_vocab = int(self.llm.n_vocab())

    @property
    def context(self) -> int:
        return int(self.llm.n_ctx())

    def _logits(self) -> torch.Tensor:
        """The last evaluated position's logits, (V,), a view of llama.cpp's buffer."""
        pointer = self._bindings.llama_get_logits_ith(self.llm.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)))

    def _eval_prompt(self, prompt: list[int]) -> None:
        """Evaluate ``prompt``, reusing the KV cache of the longest prefix it shares with what
        was evaluated last (a task's system prompt opens every chat), as llama.cpp's own
        ``Llama.generate`` does. The last prompt token is always evaluated again: its logits
        choose the first reply token. ``eval`` drops the cache past ``n_tokens``."""
        shared = shared_prefix(self.llm.input_ids[: self.llm.n_tokens], prompt[:-1])
        self.llm.n_tokens = shared
        self.llm.eval(prompt[shared:])

    def tokens(self, prompt: list[int], sampling: Sampling, ends: set[int], most: int) -> Tokens:
        if len(prompt) >= self.llm.n_ctx():
            raise ValueError(f"{len(prompt)} prompt tokens: over the context of {self.llm.n_ctx()}")
        pick = sampling.picker(ends)
        self._eval_prompt(prompt)
        made = 0
        while self.llm.n_tokens < self.llm.n_ctx():
            token = pick(self._logits(), made)
            yield token
            made += 1
            self.llm.eval([token])


def served_generator(
    folder: Path,
    runtime: str,
    threads: int,
    data_dir: Path,
    streams: int = 1,
    on_step: Callable[[int], None] = lambda chats: None,
) -> Generator:
    """A version's folder as the Serve app answers with it: on ``runtime`` "llama.cpp" its
    ``student.gguf`` and tokenizer only, decoding up to ``streams`` replies together
    (``models.batch_decoder``, which tells ``on_step`` each step's chats; 1: one at a time,
    reusing the last prompt's cache); on "torch" the transformers model itself."""
    if runtime == "torch":
        return Generator.load(folder)
    gguf = _gguf(folder, data_dir, None)
    decoder: Decoder = (
        BatchDecoder(gguf, threads, streams, on_step=on_step)
        if streams > 1
        else LlamaDecoder(gguf, threads)
    )
    return Generator(None, AutoTokenizer.from_pretrained(folder), decoder)


def on_runtime(
    generator: Generator, folder: Path, runtime: str, threads: int, data_dir: Path
) -> Generator:
    """``generator`` (a version loaded in transformers, whose likelihoods the gate needs) with
    its replies decoded as the Serve app decodes them, so that the gate measures what users
    will be sent: on "llama.cpp" from ``folder``'s ``student.gguf``."""
    if runtime == "torch":
        return generator
    gguf = _gguf(folder, data_dir, generator)
    return Generator(generator.model, generator.tokenizer, LlamaDecoder(gguf, threads))


def _gguf(folder: Path, data_dir: Path, loaded: Generator | None) -> Path:
    """``folder``'s GGUF, exported beside its weights if a version registered before the
    export lacks it (with the base GGUF's metadata, ``models.gguf.student_gguf(data_dir)``,
    needed only then); a clear error if llama-cpp-python is not installed."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "DISTILLERY_SERVE_GENERATE_RUNTIME=llama.cpp needs llama-cpp-python: run `make llm`, "
            "or set DISTILLERY_SERVE_GENERATE_RUNTIME=torch"
        ) from exc
    gguf = folder / GGUF_FILE
    if not gguf.is_file():
        export((loaded or Generator.load(folder)).model, student_gguf(data_dir), gguf)
    return gguf
