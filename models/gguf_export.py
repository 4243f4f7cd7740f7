"""A trained generative student written back to GGUF, so that llama.cpp can serve it.

The student trains in transformers (``models.generator``); llama.cpp decodes it several times
faster on these CPUs (``bench.generate``). A version's folder therefore carries both: the
transformers weights the next round starts from, and ``student.gguf`` for serving.

The export copies every metadata key of the base GGUF the student came from (architecture,
tokenizer, chat template; ``models.gguf.student_gguf``) and writes the trained tensors under
llama.cpp's names. Two facts from llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel``):
- Q and K projections are stored with their rotary halves interleaved: ``_permute`` below is
  its ``permute``; transformers undoes it when it reads a GGUF.
- Norm weights stay F32; matrices may be Q8_0 (32 weights per block, one f16 scale), the
  format whose greedy replies matched the F32 export's here (``tests/unit/test_gguf_export``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

GGUF_FILE = "student.gguf"  # inside a version's folder
Precision = Literal["f32", "q8_0"]

_LAYER = {  # transformers name inside model.layers.{i}. → GGUF name inside blk.{i}.
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_FILE_TYPE = {"f32": 0, "q8_0": 7}  # llama_ftype: ALL_F32, MOSTLY_Q8_0


def gguf_name(hf_name: str) -> str:
    """llama.cpp's tensor name for a transformers Llama parameter; unknown names are refused."""
    if hf_name in _TOP:
        return _TOP[hf_name]
    parts = hf_name.split(".", 3)  # model, layers, i, rest
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER:
        return f"blk.{int(parts[2])}.{_LAYER[parts[3]]}"
    raise ValueError(f"no GGUF name for tensor {hf_name!r} (a Llama-architecture student only)")


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """(n_head·d, in) with each head's rotary halves [x0..x_{d/2}, y0..] → interleaved."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensors(
    state: dict[str, Any], n_head: int, n_kv_head: int, tied: bool
) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array in llama.cpp's layout) per parameter of a Llama state dict;
    a tied ``lm_head`` is left out, as llama.cpp then reads the embedding."""
    for name, tensor in state.items():
        if tied and name == "lm_head.weight":
            continue
        array = tensor.detach().float().cpu().numpy()
        if name.endswith("self_attn.q_proj.weight"):
            array = _permute(array, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            array = _permute(array, n_kv_head)
        yield gguf_name(name), np.ascontiguousarray(array)


def export(model: Any, base: Path, dest: Path, precision: Precision = "q8_0") -> Path:
    """Write ``model`` (a transformers ``LlamaForCausalLM``) to ``dest`` with ``base``'s
    metadata; written beside ``dest`` and renamed, so a reader never sees half a file."""
    import gguf

    reader = gguf.GGUFReader(base)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    if arch != "llama":
        raise ValueError(f"base GGUF {base.name} is architecture {arch!r}; only 'llama' exports")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{time.time_ns()}.partial")  # one per writer
    writer = gguf.GGUFWriter(tmp, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = _FILE_TYPE[precision] if field.name == gguf.Keys.General.FILE_TYPE else None
        writer.add_key_value(
            field.name, field.contents() if value is None else value, kind, sub_type=sub
        )
    cfg = model.config
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    state = model.state_dict()
    for name, array in gguf_tensors(state, cfg.num_attention_heads, cfg.num_key_value_heads, tied):
        if precision == "q8_0" and array.ndim == 2 and array.shape[-1] % 32 == 0:
            quant = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(array, quant), raw_dtype=quant)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dest)
    return dest
