"""Fine-tuning the generative student on replies: batches in the chat template, and the epochs
of a round (sequence-level KD, ``training.sequence_kd``).

A batch is the chat up to the assistant's turn (context) followed by the reply and the
template's end of turn (scored), right-padded. The prompt's length is the length of the
generation prompt, which the template must reproduce as a prefix of the whole chat; a template
that does not is refused rather than trained on misaligned labels.

A round may add a DPO term on preference pairs (``Pairs``: a reply people rated bad, against
the correction or the teacher's reply; ``training.sequence_kd.dpo_loss``), its reference the
round's starting student, scored once before the first step (``Preference.reference``).

With ``Lora``, only low-rank adapters on the attention and MLP projections train (Hu et al.
2021, through peft), and are merged into the weights at the end, so a version is the same
folder and GGUF either way. ``bench.generate_lora`` measured what it saves: a round 0.89× the
time at the same held-out chrF (rank 16 at 5e-4), and 37 MB of AdamW state against 1,026 MB;
so the loop's rounds train the whole model, and only the benchmark uses adapters.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from distillery.events import ChatTurn
from models.generator import Generator
from training.sequence_kd import IGNORE, dpo_loss, response_labels, sequence_logps, sft_loss


@dataclass(frozen=True)
class SftBatch:
    """input_ids, attention_mask, labels: (B, T); weights: (B,)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class Pairs:
    """Preference pairs: per chat, the chosen reply (a correction, or the teacher's) and the
    rejected one (the student's reply a person rated bad)."""

    chats: Sequence[Sequence[ChatTurn]]
    chosen: Sequence[str]
    rejected: Sequence[str]

    def __len__(self) -> int:
        return len(self.chosen)


@dataclass(frozen=True)
class Lora:
    """Low-rank adapters: rank, scale ``alpha`` / ``rank``, on the modules named ``targets``
    (every projection of a Llama block, SmolLM2's)."""

    rank: int = 16
    alpha: int = 32
    targets: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip


@dataclass(frozen=True)
class Preference:
    """The DPO term of a round: its pairs, weight and β, and the pairs' reference
    log-likelihoods (P,) under the round's starting student (``reference``)."""

    pairs: Pairs
    weight: float
    beta: float
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor

    @classmethod
    def reference(
        cls, generator: Generator, pairs: Pairs, weight: float, beta: float
    ) -> Preference:
        """Score the pairs once under ``generator`` as it is now: π_ref, frozen for the round."""
        chosen = _pair_logps(generator, pairs, range(len(pairs)), pairs.chosen, grad=False)
        rejected = _pair_logps(generator, pairs, range(len(pairs)), pairs.rejected, grad=False)
        return cls(pairs, weight, beta, chosen, rejected)

    def loss(self, generator: Generator, rows: Sequence[int]) -> torch.Tensor:
        """``weight`` × the DPO loss on the pairs ``rows`` under the model being trained."""
        chosen = _pair_logps(generator, self.pairs, rows, self.pairs.chosen, grad=True)
        rejected = _pair_logps(generator, self.pairs, rows, self.pairs.rejected, grad=True)
        idx = torch.tensor(list(rows))
        term = dpo_loss(chosen, rejected, self.ref_chosen[idx], self.ref_rejected[idx], self.beta)
        return self.weight * term


def _pair_logps(
    generator: Generator, pairs: Pairs, rows: Sequence[int], replies: Sequence[str], grad: bool
) -> torch.Tensor:
    """log π(reply | chat) of ``rows`` (P,), with or without the graph, 8 pairs a forward."""
    rows, out = list(rows), []
    for start in range(0, len(rows), 8):
        part = rows[start : start + 8]
        batch = sft_batch(generator, [pairs.chats[i] for i in part], [replies[i] for i in part])
        with torch.set_grad_enabled(grad):
            logits = generator.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            out.append(sequence_logps(logits.logits, batch.labels))
    return torch.cat(out) if out else torch.zeros(0)


def sft_batch(
    generator: Generator,
    chats: Sequence[Sequence[ChatTurn]],
    replies: Sequence[str],
    weights: Sequence[float] | None = None,
    max_tokens: int = 256,
) -> SftBatch:
    """One right-padded batch; a chat longer than ``max_tokens`` keeps its end (the reply)."""
    rows, prompts = [], []
    for chat, reply in zip(chats, replies, strict=True):
        prompt = generator.chat_ids(chat)
        whole = generator.chat_ids(chat, reply)
        if whole[: len(prompt)] != prompt:
            raise ValueError("the chat template does not end the prompt where the reply begins")
        cut = max(0, len(whole) - max_tokens)
        rows.append(whole[cut:])
        prompts.append(max(0, len(prompt) - cut))
    width = max(len(r) for r in rows)
    pad = generator.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = response_labels(ids, torch.tensor(prompts), mask)
    w = torch.ones(len(rows)) if weights is None else torch.tensor(list(weights), dtype=torch.float)
    return SftBatch(ids, mask, labels, w)


def reply_logps(generator: Generator, batch: SftBatch) -> torch.Tensor:
    """log π(reply | chat) per row under the generator, (B,): the gate's likelihood signal."""
    with torch.inference_mode():
        logits = generator.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return sequence_logps(logits.logits, batch.labels)


def reply_token_logps(generator: Generator, batch: SftBatch) -> torch.Tensor:
    """log π(reply | chat) per scored token of each row, (B,): the likelihood the gate and the
    benchmarks report, comparable across replies of different lengths."""
    scored = (batch.labels[:, 1:] != IGNORE).sum(-1).clamp(min=1)  # (B,)
    return reply_logps(generator, batch) / scored


def fine_tune(
    generator: Generator,
    chats: Sequence[Sequence[ChatTurn]],
    replies: Sequence[str],
    epochs: int = 2,
    batch_size: int = 8,
    lr: float = 5e-5,
    seed: int = 0,
    weights: Sequence[float] | None = None,
    preference: Preference | None = None,
    lora: Lora | None = None,
) -> list[float]:
    """AdamW on the SFT loss over shuffled mini-batches, each reply's tokens weighted by
    ``weights`` (None: all 1), plus, with a ``preference``, its DPO term on the next
    ``batch_size`` pairs each step (cycling through them); the generator's model is trained in
    place (with ``lora``, through adapters merged into it at the end). Returns each step's
    loss."""
    if lora is not None:
        return _with_adapters(generator, lora, lambda: fine_tune(
            generator, chats, replies, epochs, batch_size, lr, seed, weights, preference
        ))  # fmt: skip
    model = generator.model
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    order = list(range(len(replies)))
    rng = random.Random(seed)
    pair_order = list(range(len(preference.pairs))) if preference else []
    random.Random(seed + 1).shuffle(pair_order)  # its own draws: the SFT order stays the same
    losses: list[float] = []
    model.train()
    try:
        for _ in range(epochs):
            rng.shuffle(order)
            for start in range(0, len(order), batch_size):
                part = order[start : start + batch_size]
                w = None if weights is None else [weights[i] for i in part]
                batch = sft_batch(
                    generator, [chats[i] for i in part], [replies[i] for i in part], w
                )
                out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                loss = sft_loss(out.logits, batch.labels, batch.weights)
                if preference is not None and pair_order:
                    step = len(losses) * batch_size
                    rows = [pair_order[(step + k) % len(pair_order)] for k in range(batch_size)]
                    loss = loss + preference.loss(generator, sorted(set(rows)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    finally:
        model.eval()
    return losses


def _with_adapters(
    generator: Generator, lora: Lora, train: Callable[[], list[float]]
) -> list[float]:
    """``train`` with ``generator.model`` wrapped in peft's adapters (the base weights frozen),
    then the adapters merged in: the model is the same module, its weights moved."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # a dev extra: only bench.generate_lora trains adapters
        raise RuntimeError("LoRA rounds need peft: pip install -e '.[dev]'") from exc

    base = generator.model
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.targets),
                        lora_dropout=0.0, bias="none")  # fmt: skip
    generator.model = get_peft_model(base, config)
    try:
        return train()
    finally:
        generator.model = generator.model.merge_and_unload()
        for p in generator.model.parameters():
            p.requires_grad_(True)
