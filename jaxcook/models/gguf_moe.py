"""llama.cpp's `gpt-oss` and `deepseek2` GGUFs: metadata -> HF config, tensors -> HF names.

- `gpt-oss`: the converter splits each layer's interleaved `gate_up_proj` [E, D, 2F] into
  `ffn_gate_exps` and `ffn_up_exps` ([E, F, D] each, biases [E, F]) and stores `down_proj`
  transposed as `ffn_down_exps` [E, D, F]; an MXFP4 checkpoint's experts stay MXFP4 (repacked
  into ggml's blocks, which `gguf.quants` dequantises). They are put back together in HF's
  layout here (`gpt_oss.GptOssSource` reads that). llama.cpp fixes what the file does not say:
  even layers slide over `attention.sliding_window`, odd ones are global; the clamped GLU uses
  alpha 1.702 and limit 7; YaRN without truncating its ramp (GPT-OSS's `truncate: false`).
- `deepseek2` (DeepSeek V3, Kimi K2): latent attention is stored as `attn_kv_b` [H*(nope+v), r],
  or (current converters) split for llama.cpp's absorbed attention into `attn_k_b` [H, r, nope]
  (transposed) and `attn_v_b` [H, v, r], which are joined back; the MLA head sizes come from
  `attention.key_length_mla` / `value_length_mla` when present (else `key_length` /
  `value_length`, the older files). Routed experts are stacked (`ffn_*_exps`), shared ones are
  `ffn_*_shexp`, the correction bias is `exp_probs_b.bias`. Routing must be sigmoid
  (`expert_gating_func` 2); llama.cpp's YaRN takes DeepSeek's `mscale_all_dim` from
  `rope.scaling.yarn_log_multiplier` (= 0.1 x mscale_all_dim) and assumes `mscale` equal to it.
  Multi-token-prediction blocks (the last `nextn_predict_layers` of `block_count`) are skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcook.models.gguf_dense import (
    BLOCK,
    COMMON_KEYS,
    MOE_KEYS,
    Entry,
    GGUFArch,
    common_config,
    map_tensors,
    plain,
    rope_parameters,
)

GPT_OSS_BLOCK = {
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate_inp": "mlp.router",
}


def _gpt_oss_config(src) -> dict[str, Any]:
    cfg = common_config(src)
    window = int(src.field("{arch}.attention.sliding_window"))
    rope = rope_parameters(src, theta_default=150000.0)
    if rope["rope_type"] == "yarn":
        rope["truncate"] = False
    return {
        **cfg,
        "intermediate_size": int(src.field("{arch}.expert_feed_forward_length")),
        "rope_parameters": rope,
        "attention_bias": True,
        "sliding_window": window,
        "layer_types": [
            "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(cfg["num_hidden_layers"])
        ],
        "num_local_experts": int(src.field("{arch}.expert_count")),
        "num_experts_per_tok": int(src.field("{arch}.expert_used_count")),
    }


def _interleave(gate: np.ndarray, up: np.ndarray, axis: int) -> np.ndarray:
    """gate and up [..., F, ...] -> [..., 2F, ...] with gate at even, up at odd positions."""
    shape = list(gate.shape)
    shape[axis] *= 2
    out = np.empty(shape, np.float32)
    index = [slice(None)] * gate.ndim
    index[axis] = slice(0, None, 2)
    out[tuple(index)] = gate
    index[axis] = slice(1, None, 2)
    out[tuple(index)] = up
    return out


def _down_proj(src, name: str) -> Entry:
    """`ffn_down_exps` [E, D, F] -> HF `down_proj` [E, F, D]."""
    E, D, F = src.raw_shape(name)
    return Entry((E, F, D), lambda: np.ascontiguousarray(np.swapaxes(src.raw(name), 1, 2)))


def _gate_up_proj(src, gate: str, up: str) -> Entry:
    """`ffn_{gate,up}_exps` -> HF `gate_up_proj`: weights [E, F, D] x 2 -> [E, D, 2F], biases
    [E, F] x 2 -> [E, 2F]; gate at even, up at odd positions."""
    if len(src.raw_shape(gate)) == 2:
        E, F = src.raw_shape(gate)
        return Entry((E, 2 * F), lambda: _interleave(src.raw(gate), src.raw(up), 1))
    E, F, D = src.raw_shape(gate)
    return Entry(
        (E, D, 2 * F),
        lambda: np.ascontiguousarray(np.swapaxes(_interleave(src.raw(gate), src.raw(up), 1), 1, 2)),
    )


def _gpt_oss_tensors(src) -> dict[str, Entry]:
    def special(name: str):
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "blk":
            return None
        layer, part, suffix = f"model.layers.{parts[1]}", parts[2], parts[3]
        if part == "attn_sinks" and suffix == "weight":
            return {f"{layer}.self_attn.sinks": plain(src, name)}
        if part == "ffn_down_exps" and suffix == "bias":  # [E, D] as is
            return {f"{layer}.mlp.experts.down_proj_bias": plain(src, name)}
        if part == "ffn_down_exps":
            return {f"{layer}.mlp.experts.down_proj": _down_proj(src, name)}
        if part == "ffn_gate_exps":  # paired with ffn_up_exps
            up = f"blk.{parts[1]}.ffn_up_exps.{suffix}"
            if up not in src.tensor_names():
                raise src.error(f"{name} has no {up}")
            hf = "gate_up_proj_bias" if suffix == "bias" else "gate_up_proj"
            return {f"{layer}.mlp.experts.{hf}": _gate_up_proj(src, name, up)}
        if part == "ffn_up_exps":
            return {}  # read with its ffn_gate_exps
        return None

    return map_tensors(src, GPT_OSS_BLOCK, special=special, experts=False)


DEEPSEEK_BLOCK = {
    **{k: v for k, v in BLOCK.items() if k not in ("attn_q_norm", "attn_k_norm", "attn_k", "attn_v")},
    "attn_q_a": "self_attn.q_a_proj",
    "attn_q_a_norm": "self_attn.q_a_layernorm",
    "attn_q_b": "self_attn.q_b_proj",
    "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa",
    "attn_kv_a_norm": "self_attn.kv_a_layernorm",
    "attn_kv_b": "self_attn.kv_b_proj",
    "ffn_gate_shexp": "mlp.shared_experts.gate_proj",
    "ffn_up_shexp": "mlp.shared_experts.up_proj",
    "ffn_down_shexp": "mlp.shared_experts.down_proj",
}
DEEPSEEK_KEYS = frozenset(
    {
        "leading_dense_block_count",
        "expert_shared_count",
        "expert_weights_scale",
        "expert_weights_norm",
        "expert_gating_func",
        "expert_group_count",
        "expert_group_used_count",
        "attention.q_lora_rank",
        "attention.kv_lora_rank",
        "attention.key_length_mla",
        "attention.value_length_mla",
        "rope.scaling.yarn_log_multiplier",
        "nextn_predict_layers",  # multi-token-prediction blocks after the main ones: skipped
    }
)
SIGMOID = 2  # gguf.ExpertGatingFuncType.SIGMOID


def _main_layers(src) -> int:
    """Decoder layers: `block_count` less the multi-token-prediction blocks (not run, as in HF)."""
    return int(src.field("{arch}.block_count")) - int(src.field("{arch}.nextn_predict_layers", 0))


def _mla_dims(src) -> tuple[int, int, int]:
    """(qk_nope_head_dim, qk_rope_head_dim, v_head_dim) of the latent attention."""
    rope = int(src.field("{arch}.rope.dimension_count"))
    if src.field("{arch}.attention.key_length_mla", None) is not None:
        qk = int(src.field("{arch}.attention.key_length_mla"))
        v = int(src.field("{arch}.attention.value_length_mla"))
    else:
        qk, v = int(src.field("{arch}.attention.key_length")), int(src.field("{arch}.attention.value_length"))
    return qk - rope, rope, v


def _deepseek2_config(src) -> dict[str, Any]:
    gating = src.field("{arch}.expert_gating_func")
    if int(gating) != SIGMOID:
        raise src.error(
            f"unsupported {src.arch}.expert_gating_func={gating} (only sigmoid, 2: DeepSeek V3 routing)"
        )
    nope, rope_dim, v = _mla_dims(src)
    cfg = common_config(src, rope_dim=rope_dim)
    heads = cfg["num_attention_heads"]
    rope = rope_parameters(src)
    if rope["rope_type"] == "yarn":
        mscale = float(src.field("{arch}.rope.scaling.yarn_log_multiplier")) / 0.1
        rope.update(mscale=mscale, mscale_all_dim=mscale)
    q_rank = src.field("{arch}.attention.q_lora_rank", None)
    for key in ("head_dim", "num_key_value_heads"):  # MLA: one kv head per head, rope-dim heads
        cfg.pop(key)
    return {
        **cfg,
        "num_hidden_layers": _main_layers(src),
        "num_key_value_heads": heads,
        "rope_parameters": rope,
        "q_lora_rank": None if q_rank is None else int(q_rank),
        "kv_lora_rank": int(src.field("{arch}.attention.kv_lora_rank")),
        "qk_nope_head_dim": nope,
        "qk_rope_head_dim": rope_dim,
        "v_head_dim": v,
        "rope_interleave": True,  # llama.cpp's deepseek2 rotates (even, odd) pairs, as DeepSeek stores them
        "moe_intermediate_size": int(src.field("{arch}.expert_feed_forward_length")),
        "n_routed_experts": int(src.field("{arch}.expert_count")),
        "num_experts_per_tok": int(src.field("{arch}.expert_used_count")),
        "n_shared_experts": int(src.field("{arch}.expert_shared_count", 0)),
        "n_group": int(src.field("{arch}.expert_group_count", 1)),
        "topk_group": int(src.field("{arch}.expert_group_used_count", 1)),
        "routed_scaling_factor": float(src.field("{arch}.expert_weights_scale", 1.0)),
        "norm_topk_prob": bool(src.field("{arch}.expert_weights_norm", False)),
        "first_k_dense_replace": int(src.field("{arch}.leading_dense_block_count", 0)),
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
    }


def _deepseek2_tensors(src) -> dict[str, Entry]:
    names, main = set(src.tensor_names()), _main_layers(src)

    def special(name: str):
        parts = name.split(".")
        if parts[0] == "blk" and int(parts[1]) >= main:
            return {}  # a multi-token-prediction block
        if len(parts) != 4 or parts[0] != "blk":
            return None
        layer, part = f"model.layers.{parts[1]}", parts[2]
        if part == "exp_probs_b" and parts[3] == "bias":
            return {f"{layer}.mlp.gate.e_score_correction_bias": plain(src, name)}
        if part == "attn_v_b":
            return {}  # read with its attn_k_b
        if part != "attn_k_b":
            return None
        if f"blk.{parts[1]}.attn_kv_b.weight" in names:
            return {}  # the file also stores the joined tensor: use that
        v_name = f"blk.{parts[1]}.attn_v_b.weight"
        if v_name not in names:
            raise src.error(f"{name} has no {v_name}")
        H, r, nope = src.raw_shape(name)  # k_b [H, r, nope], v_b [H, v, r]
        v = src.raw_shape(v_name)[1]

        def read():  # kv_b_proj [H * (nope + v), r]
            k_HNR = np.swapaxes(src.raw(name), 1, 2)
            return np.concatenate([k_HNR, src.raw(v_name)], axis=1).reshape(H * (nope + v), r)

        return {f"{layer}.self_attn.kv_b_proj.weight": Entry((H * (nope + v), r), read)}

    return map_tensors(src, DEEPSEEK_BLOCK, special=special)


GPT_OSS = GGUFArch(
    model_type="gpt_oss",
    keys=COMMON_KEYS | MOE_KEYS | {"attention.sliding_window"},
    config=_gpt_oss_config,
    tensors=_gpt_oss_tensors,
)
DEEPSEEK2 = GGUFArch(
    model_type="deepseek_v3",
    keys=COMMON_KEYS | MOE_KEYS | DEEPSEEK_KEYS,
    config=_deepseek2_config,
    tensors=_deepseek2_tensors,
)
