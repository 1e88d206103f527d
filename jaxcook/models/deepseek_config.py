"""The strict `config.json` reader and writer of DeepSeek V3 (`deepseek_v3`) and Kimi K2 (`kimi_k2`,
a DeepSeek V3 config under its own model_type; written back as `deepseek_v3`, which transformers
builds without remote code).

Both the transformers-5 fields and those of DeepSeek's own configs (`topk_method`,
`scoring_func`, `moe_layer_freq`, ...) are read; a field that would change the forward pass in a
way not built here is an error naming it, e.g. a rope type other than default / YaRN. Block-FP8
weights (`quantization_config`, as DeepSeek ships them, `fp8.py`) and compressed-tensors' packed
INT4 experts (Kimi K2 Thinking, `int4.py`) are dequantised on load; any other quantisation is an
error naming the field. Multi-token-prediction modules
(`num_nextn_predict_layers`) are not part of the forward pass: their tensors are skipped on load
and not exported.
"""

from __future__ import annotations

from typing import Any

from jaxcook.models.config import ConfigError, MlaConfig, MoeConfig, _read_rope
from jaxcook.models.families import _check_fields, _common, _need, _require
from jaxcook.models.int4 import read_compressed_int4

ALLOWED = {
    "hidden_act",
    "attention_bias",
    "moe_intermediate_size",
    "n_shared_experts",
    "n_routed_experts",
    "num_local_experts",
    "routed_scaling_factor",
    "kv_lora_rank",
    "q_lora_rank",
    "qk_rope_head_dim",
    "qk_nope_head_dim",
    "qk_head_dim",
    "v_head_dim",
    "n_group",
    "topk_group",
    "num_experts_per_tok",
    "first_k_dense_replace",
    "norm_topk_prob",
    "rope_interleave",
    "topk_method",
    "scoring_func",
    "moe_layer_freq",
    # forward-neutral: parallelism hints, training-only balancing losses, router-logit outputs,
    # the multi-token-prediction modules, tensor-parallel pretraining bookkeeping, remote code
    "ep_size",
    "aux_loss_alpha",
    "seq_aux",
    "output_router_logits",
    "num_nextn_predict_layers",
    "num_mtp_layers",
    "pretraining_tp",
    "auto_map",
}


# quantization_config fields (transformers' FineGrainedFP8Config) that need a given value; the
# others read are `weight_block_size` and the forward-neutral `modules_to_not_convert`, `dequantize`
_FP8_FIXED = {
    "fmt": ("e4m3",),
    "activation_scheme": ("dynamic",),  # "static" would quantise activations with stored scales
    "scale_fmt": ("float", "ue8m0"),  # fp32 scales, or powers of two (DeepSeek V3.1)
    "expert_dtype": ("fp8",),
}
_FP8_FIELDS = {"quant_method", "weight_block_size", "modules_to_not_convert", "dequantize", *_FP8_FIXED}


def read_fp8(quant: dict, source: str) -> tuple[int, int]:
    """The (rows, cols) FP8 block of a `quantization_config`; anything else is an error naming it."""
    where = f"{source}: quantization_config"
    if not isinstance(quant, dict):
        raise ConfigError(f"{where} must be an object, got {quant!r}")
    if quant.get("quant_method") != "fp8":
        raise ConfigError(
            f"{where}.quant_method {quant.get('quant_method')!r} is not supported "
            "(only block FP8, 'fp8', and compressed-tensors' packed int4)"
        )
    for key in quant:
        if key not in _FP8_FIELDS:
            raise ConfigError(f"{where}: unsupported field {key!r}")
    for key, allowed in _FP8_FIXED.items():
        if key in quant and quant[key] not in allowed:
            raise ConfigError(f"{where}.{key} {quant[key]!r} is not supported (only {', '.join(allowed)})")
    block = quant.get("weight_block_size", [128, 128])  # transformers' default
    if not (
        isinstance(block, list | tuple)
        and len(block) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise ConfigError(f"{where}.weight_block_size {block!r} must be two positive ints [rows, cols]")
    return int(block[0]), int(block[1])


def read_deepseek_v3(hf: dict, source: str) -> dict[str, Any]:
    quant = hf.get("quantization_config")
    fp8_block = int4_group = None
    if isinstance(quant, dict) and quant.get("quant_method") == "compressed-tensors":
        int4_group = read_compressed_int4(quant, source)  # Kimi K2 Thinking's INT4 experts
    elif quant is not None:
        fp8_block = read_fp8(quant, source)
    _check_fields(hf, ALLOWED | {"quantization_config"}, source)
    _require(hf, "hidden_act", lambda v: v == "silu", source, "only 'silu'")
    _require(hf, "attention_bias", lambda v: not v, source, "q/kv/o biases are not supported")
    _require(hf, "topk_method", lambda v: v == "noaux_tc", source, "only 'noaux_tc' routing")
    _require(hf, "scoring_func", lambda v: v == "sigmoid", source, "only sigmoid router scores")
    _require(hf, "moe_layer_freq", lambda v: v == 1, source, "every layer after the dense ones is MoE")
    heads = int(_need(hf, "num_attention_heads", source))
    _require(
        hf,
        "num_key_value_heads",
        lambda v: v in (None, heads),
        source,
        "latent attention has one kv head per head",
    )
    mla = MlaConfig(
        q_lora_rank=None if hf.get("q_lora_rank") is None else int(hf["q_lora_rank"]),
        kv_lora_rank=int(_need(hf, "kv_lora_rank", source)),
        qk_nope_head_dim=int(_need(hf, "qk_nope_head_dim", source)),
        qk_rope_head_dim=int(_need(hf, "qk_rope_head_dim", source)),
        v_head_dim=int(_need(hf, "v_head_dim", source)),
        rope_interleave=bool(hf.get("rope_interleave", True)),
    )
    rope_dim = mla.qk_rope_head_dim
    _require(hf, "head_dim", lambda v: v == rope_dim, source, f"must equal qk_rope_head_dim={rope_dim}")
    qk_dim = mla.qk_nope_head_dim + rope_dim
    _require(hf, "qk_head_dim", lambda v: v == qk_dim, source, f"must equal qk_nope + qk_rope = {qk_dim}")
    theta, scaling = _read_rope(hf, source)
    if scaling is not None and scaling["rope_type"] != "yarn":
        raise ConfigError(
            f"{source}: unsupported rope type {scaling['rope_type']!r} for deepseek_v3 (default or yarn)"
        )
    if scaling is not None and scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(
            f"{source}: unsupported rope partial_rotary_factor={scaling['partial_rotary_factor']}"
        )
    experts = hf.get("n_routed_experts", hf.get("num_local_experts"))
    if experts is None:
        raise ConfigError(f"{source}: missing required field 'n_routed_experts'")
    moe = MoeConfig(
        num_experts=int(experts),
        top_k=int(_need(hf, "num_experts_per_tok", source)),
        intermediate_size=int(_need(hf, "moe_intermediate_size", source)),
        norm_topk_prob=bool(hf.get("norm_topk_prob", True)),
        style="deepseek_v3",
        n_group=int(hf.get("n_group") or 1),
        topk_group=int(hf.get("topk_group") or 1),
        routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
        shared_experts=int(hf.get("n_shared_experts") or 0),
    )
    return dict(
        **{**_common(hf, source), "head_dim": rope_dim, "num_kv_heads": heads},
        rope_theta=theta,
        rope_scaling=scaling,
        mla=mla,
        moe=moe,
        first_dense_layers=int(hf.get("first_k_dense_replace") or 0),
        fp8_block_size=fp8_block,
        int4_group_size=int4_group,
    )


def write_deepseek_v3(cfg) -> dict[str, Any]:
    mla, moe = cfg.mla, cfg.moe
    return {
        "model_type": "deepseek_v3",
        "attention_bias": False,
        "q_lora_rank": mla.q_lora_rank,
        "kv_lora_rank": mla.kv_lora_rank,
        "qk_nope_head_dim": mla.qk_nope_head_dim,
        "qk_rope_head_dim": mla.qk_rope_head_dim,
        "v_head_dim": mla.v_head_dim,
        "rope_interleave": mla.rope_interleave,
        "n_routed_experts": moe.num_experts,
        "num_experts_per_tok": moe.top_k,
        "moe_intermediate_size": moe.intermediate_size,
        "norm_topk_prob": moe.norm_topk_prob,
        "n_group": moe.n_group,
        "topk_group": moe.topk_group,
        "routed_scaling_factor": moe.routed_scaling_factor,
        "n_shared_experts": moe.shared_experts,
        "first_k_dense_replace": cfg.first_dense_layers,
        "num_nextn_predict_layers": 0,  # multi-token-prediction modules are not exported
    }
