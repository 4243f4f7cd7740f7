"""The GGUF export's pure parts: llama.cpp's tensor names, and the Q/K layout that transformers
undoes when it reads a GGUF (its ``LlamaTensorProcessor``), so an export reads back unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from models.gguf_export import _permute, gguf_name, gguf_tensors


@pytest.mark.parametrize(
    ("hf", "gguf"),
    [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
        ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"),
        ("model.layers.29.mlp.down_proj.weight", "blk.29.ffn_down.weight"),
        ("model.layers.7.post_attention_layernorm.weight", "blk.7.ffn_norm.weight"),
    ],
)
def test_transformers_names_map_to_llama_cpp_names(hf: str, gguf: str) -> None:
    assert gguf_name(hf) == gguf


@pytest.mark.parametrize(
    "name", ["model.layers.0.self_attn.q_proj.bias", "model.rotary.inv_freq", "model.layers.x"]
)
def test_an_unknown_tensor_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        gguf_name(name)


@pytest.mark.parametrize(("heads", "kv_heads"), [(9, 9), (9, 3), (4, 2)])
def test_transformers_undoes_the_rotary_interleave(heads: int, kv_heads: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((kv_heads * 8, 12)).astype(np.float32)  # (kv heads · head dim, in)
    permuted = _permute(w, kv_heads)
    assert not np.array_equal(permuted, w)
    back = LlamaTensorProcessor()._reverse_permute_weights(permuted, heads, kv_heads)
    np.testing.assert_array_equal(back, w)


def test_tensors_are_renamed_permuted_and_a_tied_head_left_out() -> None:
    q = torch.arange(16 * 3, dtype=torch.float32).reshape(16, 3)  # 2 heads of 8
    state = {
        "model.embed_tokens.weight": torch.ones(5, 3),
        "model.layers.0.self_attn.q_proj.weight": q,
        "model.layers.0.self_attn.v_proj.weight": q.clone(),
        "lm_head.weight": torch.ones(5, 3),
    }
    out = dict(gguf_tensors(state, n_head=2, n_kv_head=1, tied=True))
    assert set(out) == {"token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_v.weight"}
    np.testing.assert_array_equal(out["blk.0.attn_q.weight"], _permute(q.numpy(), 2))
    np.testing.assert_array_equal(out["blk.0.attn_v.weight"], q.numpy())  # V keeps its layout
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in out.values())
    untied = dict(gguf_tensors(state, n_head=2, n_kv_head=1, tied=False))
    assert "output.weight" in untied
