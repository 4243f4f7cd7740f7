"""A generative version's view of prompts for drift checks: its input embeddings, mean-pooled.

Each prompt becomes the mean of its tokens' rows of the LM's input embedding table, (N, H): a bag
of embeddings. Only the table and the tokenizer are read from the version's folder (the
``*.safetensors`` tensor named ``…embed_tokens.weight``, 49,152 × 576 for SmolLM2-135M, 113 MB in
fp32), not the model: the scheduler embeds a few hundred prompts per check without a forward pass
or a second copy of the LM in memory. What it sees is the prompts' vocabulary and topic, which is
what a shift of domain (reviews → tweets) changes; a contextual encoder would see more and cost a
forward pass per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

EMBEDDING_SUFFIX = "embed_tokens.weight"


class PromptEmbedder:
    """``tokenizer`` (a transformers tokenizer) and ``table`` (V, H), the LM's input embeddings."""

    def __init__(self, tokenizer: Any, table: torch.Tensor, max_tokens: int = 256) -> None:
        if table.ndim != 2:
            raise ValueError(f"an embedding table is (V, H), got shape {tuple(table.shape)}")
        self.tokenizer = tokenizer
        self.table = table.float()
        self.max_tokens = max_tokens

    @classmethod
    def load(cls, folder: Path, max_tokens: int = 256) -> PromptEmbedder:
        """The version saved in ``folder`` (``models.generator.Generator.save``)."""
        from safetensors import safe_open
        from transformers import AutoTokenizer

        for weights in sorted(folder.glob("*.safetensors")):
            with safe_open(str(weights), framework="pt") as stored:
                names: list[str] = stored.keys()  # a safe_open handle is no mapping
                key = next((k for k in names if k.endswith(EMBEDDING_SUFFIX)), None)
                if key is not None:
                    table = stored.get_tensor(key)
                    return cls(AutoTokenizer.from_pretrained(folder), table, max_tokens)
        raise FileNotFoundError(f"no *{EMBEDDING_SUFFIX} in {folder}'s *.safetensors")

    @torch.inference_mode()
    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """(N, H) float32: each text's mean input embedding over its first ``max_tokens``
        tokens (no special tokens); a text with no token gets zeros."""
        ids = self.tokenizer(
            list(texts), add_special_tokens=False, truncation=True, max_length=self.max_tokens
        )["input_ids"]
        out = np.zeros((len(ids), self.table.shape[1]), dtype=np.float32)  # (N, H)
        for row, tokens in enumerate(ids):
            if tokens:
                out[row] = self.table[torch.tensor(tokens)].mean(0).numpy()  # (H,)
        return out
