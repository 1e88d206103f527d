"""llama.cpp's dense architectures (and Qwen3-MoE) in GGUF: metadata -> HF config, names -> HF.

- `llama` (Llama, SmolLM2, and Mistral: llama.cpp converts `MistralForCausalLM` to `llama`, without
  a sliding window, so such a file loads as a `llama` config): the converter permutes the rows of
  q and k (and their biases) per head for its interleaved RoPE; `_unpermute` restores HF's
  `rotate_half` order. Per-frequency rope factors (`rope_freqs.weight`, Llama 3.1) are not read.
- `qwen2`, `qwen3`, `qwen3moe`: HF order; Qwen3-MoE's experts come stacked per layer
  (`blk.N.ffn_{gate,up,down}_exps`, [E, out, in]), and llama.cpp always renormalises its top-k.
- `gemma3`: the converter stores every `*norm.weight` plus one (Gemma's RMSNorm scales by 1 + w);
  one is subtracted back. llama.cpp fixes what the file does not say: every sixth layer is global
  (the others slide over `attention.sliding_window`; none when that key is absent), local layers
  use rope base 10000 (`rope.freq_base_swa` where a file has it) and no scaling, and the query
  scale is `head_dim^-1/2` (27B, 62 layers: `(hidden / heads)^-1/2`); the config read here says
  the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class Entry(NamedTuple):
    """One HF tensor of a GGUF file: its shape and how to read it (float32)."""

    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class GGUFArch:
    """How to read one llama.cpp architecture: the `{arch}.*` metadata keys it understands (any
    other is an error), the HF config dict built from them, and the HF-named tensors."""

    model_type: str
    keys: frozenset[str]
    config: Callable[[Any], dict[str, Any]]
    tensors: Callable[[Any], dict[str, Entry]]


COMMON_KEYS = frozenset(
    {
        "vocab_size",
        "block_count",
        "context_length",
        "embedding_length",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "attention.key_length",
        "attention.value_length",
        "attention.layer_norm_rms_epsilon",
        "rope.freq_base",
        "rope.dimension_count",
        "rope.scaling.type",
        "rope.scaling.factor",
        "rope.scaling.original_context_length",
        "rope.scaling.finetuned",
        "rope.scaling.attn_factor",
        "rope.scaling.yarn_beta_fast",
        "rope.scaling.yarn_beta_slow",
    }
)
MOE_KEYS = frozenset({"expert_count", "expert_used_count", "expert_feed_forward_length"})

TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
BLOCK = {
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
GEMMA3_BLOCK = {
    **{k: v for k, v in BLOCK.items() if k != "ffn_gate_inp"},
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Experts stacked [E, out, in] in one tensor per layer -> the virtual [out, in, E] tensor the
# parameter map reads for a `GroupedLinear` kernel (`expert_weights.py`).
EXPERTS = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}


def plain(src, name: str, fix: Callable[[np.ndarray], np.ndarray] | None = None) -> Entry:
    return Entry(src.raw_shape(name), lambda: fix(src.raw(name)) if fix else src.raw(name))


def stacked_experts(src, name: str) -> Entry:
    """[E, out, in] stored -> [out, in, E]."""
    E, *rest = src.raw_shape(name)
    return Entry((*rest, E), lambda: np.ascontiguousarray(np.moveaxis(src.raw(name), 0, -1)))


def map_tensors(src, block: dict[str, str], *, special=None, fix=None, experts=True) -> dict[str, Entry]:
    """HF-named entries of every stored tensor: `TOP` names, `blk.{i}.{part}.{weight,bias}` with
    `part` in `block`, stacked `EXPERTS` (if `experts`); the rest go to `special(name) -> {hf:
    Entry} | None` (None: an unexpected tensor). `fix(hf_name) -> transform or None` adjusts a
    plain tensor."""
    out: dict[str, Entry] = {}
    for name in src.tensor_names():
        parts = name.split(".")
        layer, part, suffix = parts[1:] if len(parts) == 4 and parts[0] == "blk" else (None, None, None)
        if name in TOP:
            hf = TOP[name]
        elif part in block:
            hf = f"model.layers.{layer}.{block[part]}.{suffix}"
        elif experts and part in EXPERTS and suffix == "weight":
            out[f"model.layers.{layer}.mlp.experts.{EXPERTS[part]}.weight"] = stacked_experts(src, name)
            continue
        else:
            got = special(name) if special is not None else None
            if got is None:
                if name == "rope_freqs.weight":
                    raise src.error("per-frequency rope factors (rope_freqs.weight) are not supported")
                raise src.error(f"unexpected tensor {name!r} for architecture {src.arch!r}")
            out.update(got)
            continue
        out[hf] = plain(src, name, fix(hf) if fix is not None else None)
    return out


def token_ids(src) -> dict[str, int | None]:
    def token_id(key):
        value = src.field(f"tokenizer.ggml.{key}", None)
        return int(value) if value is not None else None

    return {
        "bos_token_id": token_id("bos_token_id"),
        "eos_token_id": token_id("eos_token_id"),
        "pad_token_id": token_id("padding_token_id"),
    }


def rope_parameters(src, *, theta_default: float = 10000.0) -> dict[str, Any]:
    """HF `rope_parameters` from `{arch}.rope.*`: default, linear or YaRN scaling."""
    params: dict[str, Any] = {"rope_theta": float(src.field("{arch}.rope.freq_base", theta_default))}
    kind = src.field("{arch}.rope.scaling.type", "none")
    if kind == "none":
        return {"rope_type": "default", **params}
    if kind not in ("linear", "yarn"):
        raise src.error(f"unsupported rope scaling {kind!r} ({src.arch}.rope.scaling.type)")
    params.update(rope_type=kind, factor=float(src.field("{arch}.rope.scaling.factor")))
    if kind == "yarn":
        params["original_max_position_embeddings"] = int(
            src.field("{arch}.rope.scaling.original_context_length")
        )
        params["beta_fast"] = float(src.field("{arch}.rope.scaling.yarn_beta_fast", 32.0))
        params["beta_slow"] = float(src.field("{arch}.rope.scaling.yarn_beta_slow", 1.0))
        if (attn := src.field("{arch}.rope.scaling.attn_factor", None)) is not None:
            params["attention_factor"] = float(attn)
    return params


def common_config(src, *, rope_dim: int | None = None) -> dict[str, Any]:
    """The fields every family shares. The rope covers the whole head (`rope_dim` else)."""
    heads = int(src.field("{arch}.attention.head_count"))
    hidden = int(src.field("{arch}.embedding_length"))
    head_dim = int(src.field("{arch}.attention.key_length", hidden // heads))
    rotary = int(src.field("{arch}.rope.dimension_count", rope_dim or head_dim))
    if rotary != (rope_dim or head_dim):
        raise src.error(f"unsupported partial rotary embeddings ({src.arch}.rope.dimension_count={rotary})")
    return {
        "vocab_size": src.raw_shape("token_embd.weight")[0],
        "hidden_size": hidden,
        "intermediate_size": int(src.field("{arch}.feed_forward_length", 0)),
        "num_hidden_layers": int(src.field("{arch}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(src.field("{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(src.field("{arch}.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(src.field("{arch}.context_length", 8192)),
        "tie_word_embeddings": "output.weight" not in src.tensor_names(),
        **token_ids(src),
    }


def _dense_config(src) -> dict[str, Any]:
    cfg = {**common_config(src), "rope_parameters": rope_parameters(src), "hidden_act": "silu"}
    if src.arch == "llama" and "blk.0.attn_q.bias" in src.tensor_names():
        cfg["attention_bias"] = True
    return cfg


def _qwen3moe_config(src) -> dict[str, Any]:
    return {
        **_dense_config(src),
        "num_experts": int(src.field("{arch}.expert_count")),
        "num_experts_per_tok": int(src.field("{arch}.expert_used_count")),
        "moe_intermediate_size": int(src.field("{arch}.expert_feed_forward_length")),
        "norm_topk_prob": True,  # llama.cpp always renormalises Qwen3-MoE's top-k weights
    }


def _llama_tensors(src) -> dict[str, Entry]:
    heads = int(src.field("{arch}.attention.head_count"))
    kv_heads = int(src.field("{arch}.attention.head_count_kv", heads))

    def fix(hf: str):
        if hf.endswith(("q_proj.weight", "q_proj.bias")):
            return lambda w: _unpermute(w, heads)
        if hf.endswith(("k_proj.weight", "k_proj.bias")):
            return lambda w: _unpermute(w, kv_heads)
        return None

    return map_tensors(src, BLOCK, fix=fix)


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: per head, rows (pairs interleaved) -> (halves)."""
    head_dim = w.shape[0] // heads
    return w.reshape(heads, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gemma3_config(src) -> dict[str, Any]:
    cfg = common_config(src)
    layers, window = cfg["num_hidden_layers"], src.field("{arch}.attention.sliding_window", None)
    if window:  # llama.cpp: every sixth layer global
        types = ["full_attention" if i % 6 == 5 else "sliding_attention" for i in range(layers)]
    else:
        types = ["full_attention"] * layers
    scalar = cfg["hidden_size"] // cfg["num_attention_heads"] if layers == 62 else cfg["head_dim"]
    local = {"rope_type": "default", "rope_theta": float(src.field("{arch}.rope.freq_base_swa", 10000.0))}
    return {
        **cfg,
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": scalar,
        "sliding_window": int(window) if window else None,
        "layer_types": types,
        "rope_parameters": {
            "full_attention": rope_parameters(src, theta_default=1_000_000.0),
            "sliding_attention": local,
        },
    }


def _gemma3_tensors(src) -> dict[str, Entry]:
    return map_tensors(
        src, GEMMA3_BLOCK, fix=lambda hf: (lambda w: w - 1.0) if hf.endswith("norm.weight") else None
    )


LLAMA = GGUFArch(model_type="llama", keys=COMMON_KEYS, config=_dense_config, tensors=_llama_tensors)
QWEN2 = GGUFArch(
    model_type="qwen2", keys=COMMON_KEYS, config=_dense_config, tensors=lambda s: map_tensors(s, BLOCK)
)
QWEN3 = GGUFArch(
    model_type="qwen3", keys=COMMON_KEYS, config=_dense_config, tensors=lambda s: map_tensors(s, BLOCK)
)
QWEN3MOE = GGUFArch(
    model_type="qwen3_moe",
    keys=COMMON_KEYS | MOE_KEYS,
    config=_qwen3moe_config,
    tensors=lambda s: map_tensors(s, BLOCK),
)
GEMMA3 = GGUFArch(
    model_type="gemma3_text",
    keys=COMMON_KEYS | {"attention.sliding_window", "rope.freq_base_swa"},
    config=_gemma3_config,
    tensors=_gemma3_tensors,
)
