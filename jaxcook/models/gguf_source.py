"""GGUF files as a lazy source of HF-named tensors plus an HF-style config.

Tensors are dequantised on access with `gguf.quants.dequantize`. llama.cpp stores the q and k
projections of `llama`-architecture models with rows permuted for its interleaved RoPE; they
are permuted back to the HF layout (`rotate_half` RoPE) here. Qwen3-MoE (`qwen3moe`) experts
come stacked per layer (`blk.N.ffn_{gate,up,down}_exps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxcook.models.safetensors_source import WeightsError

_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",  # the MoE router
}
# Experts, stacked [E, out, in] (numpy order) in one tensor per layer: the virtual name the
# parameter map reads for a `GroupedLinear` kernel (see `expert_weights.py`), which wants
# [out, in, E]; `get` moves the expert axis last.
_EXPERTS = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}
_ARCH_TO_MODEL_TYPE = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe"}


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK:
        return f"model.layers.{parts[1]}.{_BLOCK[parts[2]]}.{parts[3]}"
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _EXPERTS and parts[3] == "weight":
        return f"model.layers.{parts[1]}.mlp.experts.{_EXPERTS[parts[2]]}.weight"
    return None


class GGUFSource:
    """`names()`, `shape(name)`, `get(name)` in HF names, and `hf_config()` from the metadata."""

    def __init__(self, path: str | Path):
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.exists():
            raise WeightsError(f"{self.path}: no such GGUF file")
        try:
            self.reader = GGUFReader(str(self.path))
        except Exception as e:
            raise WeightsError(f"{self.path}: not a readable GGUF file ({e})") from e
        self.arch = self._field("general.architecture")
        if self.arch not in _ARCH_TO_MODEL_TYPE:
            raise WeightsError(
                f"{self.path}: unsupported general.architecture {self.arch!r}; "
                f"supported: {sorted(_ARCH_TO_MODEL_TYPE)}"
            )
        self._tensors = {}
        for t in self.reader.tensors:
            if t.name == "rope_freqs.weight":
                raise WeightsError(
                    f"{self.path}: per-frequency rope factors (rope_freqs.weight) are not supported"
                )
            hf = _hf_name(t.name)
            if hf is None:
                raise WeightsError(f"{self.path}: unexpected tensor {t.name!r}")
            self._tensors[hf] = t

    def _field(self, key: str, default: Any = KeyError) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            if default is KeyError:
                raise WeightsError(f"{self.path}: missing metadata field {key!r}")
            return default
        return field.contents()

    def names(self) -> list[str]:
        return list(self._tensors)

    def _stored_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(x) for x in reversed(self._tensors[name].shape))

    def shape(self, name: str) -> tuple[int, ...]:
        shape = self._stored_shape(name)
        return (*shape[1:], shape[0]) if ".mlp.experts." in name else shape

    def get(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[name]
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(self._stored_shape(name))
        if ".mlp.experts." in name:  # [E, out, in] -> [out, in, E]
            return np.ascontiguousarray(np.moveaxis(w, 0, -1))
        if self.arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = self._field("llama.attention.head_count")
            if name.endswith("k_proj.weight"):
                heads = self._field("llama.attention.head_count_kv", heads)
            w = _unpermute(w, heads)
        return w

    def hf_config(self) -> dict[str, Any]:
        a = self.arch
        heads = int(self._field(f"{a}.attention.head_count"))
        hidden = int(self._field(f"{a}.embedding_length"))
        head_dim = int(self._field(f"{a}.attention.key_length", hidden // heads))
        vocab = self.shape("model.embed_tokens.weight")[0]

        def token_id(key):
            value = self._field(f"tokenizer.ggml.{key}", None)
            return int(value) if value is not None else None

        return {
            "model_type": _ARCH_TO_MODEL_TYPE[a],
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": int(self._field(f"{a}.feed_forward_length", 0)),
            "num_hidden_layers": int(self._field(f"{a}.block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(self._field(f"{a}.attention.head_count_kv", heads)),
            "head_dim": head_dim,
            "rms_norm_eps": float(self._field(f"{a}.attention.layer_norm_rms_epsilon")),
            "rope_theta": float(self._field(f"{a}.rope.freq_base", 10000.0)),
            "max_position_embeddings": int(self._field(f"{a}.context_length", 8192)),
            "tie_word_embeddings": "lm_head.weight" not in self._tensors,
            "hidden_act": "silu",
            "bos_token_id": token_id("bos_token_id"),
            "eos_token_id": token_id("eos_token_id"),
            "pad_token_id": token_id("padding_token_id"),
            **self._moe_config(),
        }

    def _moe_config(self) -> dict[str, Any]:
        a = self.arch
        if a != "qwen3moe":
            return {}
        # llama.cpp always renormalises Qwen3-MoE's top-k weights (norm_topk_prob)
        return {
            "num_experts": int(self._field(f"{a}.expert_count")),
            "num_experts_per_tok": int(self._field(f"{a}.expert_used_count")),
            "moe_intermediate_size": int(self._field(f"{a}.expert_feed_forward_length")),
            "norm_topk_prob": True,
        }


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: per head, rows (pairs interleaved) -> (halves)."""
    head_dim = w.shape[0] // heads
    if w.ndim == 1:  # a bias vector
        return w.reshape(heads, head_dim // 2, 2).swapaxes(1, 2).reshape(w.shape)
    return w.reshape(heads, head_dim // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
