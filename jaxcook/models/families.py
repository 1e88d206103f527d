"""Strict `config.json` readers (and writers) of the families beyond the dense core.

Each reader maps one HF `model_type` to `ModelConfig` keyword arguments. Every field of the
HF config must be either understood here or in `NEUTRAL` (fields that do not change the
forward pass); anything else, or a supported field with an unsupported value, is a
`ConfigError` naming the field. The writers add the family's own fields on export
(`ModelConfig.to_hf`), so transformers reads the same architecture back.

- `mistral`: Llama without biases; `sliding_window` (keys at most that many slots back).
- `qwen3_moe`: Qwen3 attention with a sparse MLP (softmax top-k routing) in every layer.
- `gpt_oss`: biased attention with sinks, alternating sliding/full layers, YaRN rope, and its
  MoE (top-k logits then softmax; biased, clamped-GLU experts; see `gpt_oss.py`).
- `deepseek_v3`, `kimi_k2`: latent attention, sigmoid group-limited routing with shared experts,
  dense first layers (`deepseek_config.py`).
- `gemma3_text`: scaled embeddings, (1 + w) RMSNorms, sandwich norms, q/k norms, a query
  scale of `query_pre_attn_scalar^-1/2`, GELU(tanh) MLP, and alternating sliding/full layers
  with their own rope bases.
"""

from __future__ import annotations

from typing import Any

from jaxcook.models.config import ConfigError, MoeConfig, _read_rope

# Fields that change nothing in the forward pass (bookkeeping, training-only, generation).
NEUTRAL = {
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "initializer_range",
    "attention_dropout",
    "_name_or_path",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "id2label",
    "label2id",
    "problem_type",
    "tokenizer_class",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "max_position_embeddings",
    "tie_word_embeddings",
    "_sliding_window_pattern",
    "sliding_window_pattern",
    "use_bidirectional_attention",
    "cache_implementation",
}
COMMON = {
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
}


def _need(hf: dict, key: str, source: str):
    if key not in hf or hf[key] is None:
        raise ConfigError(f"{source}: missing required field {key!r}")
    return hf[key]


def _check_fields(hf: dict, allowed: set[str], source: str) -> None:
    for key in hf:
        if key not in allowed and key not in NEUTRAL and key not in COMMON:
            raise ConfigError(
                f"{source}: unsupported config field {key!r} for model_type {hf['model_type']!r}"
            )


def _require(hf: dict, key: str, ok, source: str, what: str) -> None:
    if key in hf and not ok(hf[key]):
        raise ConfigError(f"{source}: unsupported {key}={hf[key]!r} ({what})")


def _common(hf: dict, source: str, *, head_dim_default: int | None = None) -> dict[str, Any]:
    heads = int(_need(hf, "num_attention_heads", source))
    hidden = int(_need(hf, "hidden_size", source))
    return dict(
        model_type=hf["model_type"],
        vocab_size=int(_need(hf, "vocab_size", source)),
        hidden_size=hidden,
        intermediate_size=int(_need(hf, "intermediate_size", source)),
        num_layers=int(_need(hf, "num_hidden_layers", source)),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or head_dim_default or hidden // heads),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )


def read_mistral(hf: dict, source: str) -> dict[str, Any]:
    _check_fields(hf, {"hidden_act", "sliding_window", "attention_bias", "mlp_bias"}, source)
    _require(hf, "hidden_act", lambda v: v == "silu", source, "only 'silu'")
    _require(hf, "attention_bias", lambda v: not v, source, "Mistral has no biases")
    _require(hf, "mlp_bias", lambda v: not v, source, "Mistral has no biases")
    theta, scaling = _read_rope(hf, source)
    window = hf.get("sliding_window")
    return dict(
        **_common(hf, source),
        rope_theta=theta,
        rope_scaling=scaling,
        sliding_window=int(window) if window else None,
    )


def read_qwen3_moe(hf: dict, source: str) -> dict[str, Any]:
    allowed = {
        "hidden_act",
        "attention_bias",
        "num_experts",
        "num_local_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "norm_topk_prob",
        "decoder_sparse_step",
        "mlp_only_layers",
        "output_router_logits",
        "router_aux_loss_coef",
        "use_sliding_window",
        "sliding_window",
        "max_window_layers",
    }
    _check_fields(hf, allowed, source)
    _require(hf, "hidden_act", lambda v: v == "silu", source, "only 'silu'")
    _require(hf, "attention_bias", lambda v: not v, source, "q/k/v/o biases are not supported")
    _require(hf, "use_sliding_window", lambda v: not v, source, "sliding-window Qwen3-MoE is not supported")
    _require(hf, "decoder_sparse_step", lambda v: v == 1, source, "every layer must be sparse")
    _require(hf, "mlp_only_layers", lambda v: not v, source, "dense layers in a Qwen3-MoE are not supported")
    experts = hf.get("num_experts", hf.get("num_local_experts"))
    if experts is None:
        raise ConfigError(f"{source}: missing required field 'num_experts'")
    aux = float(hf.get("router_aux_loss_coef", 0.001)) if hf.get("output_router_logits") else 0.0
    theta, scaling = _read_rope(hf, source)
    return dict(
        **_common(hf, source),
        rope_theta=theta,
        rope_scaling=scaling,
        qk_norm=True,
        moe=MoeConfig(
            num_experts=int(experts),
            top_k=int(_need(hf, "num_experts_per_tok", source)),
            intermediate_size=int(_need(hf, "moe_intermediate_size", source)),
            norm_topk_prob=bool(hf.get("norm_topk_prob", False)),  # the HF default
            aux_loss_coef=aux,
        ),
    )


def _gemma_rope(hf: dict, source: str) -> tuple[float, dict | None, float]:
    """(global theta, global scaling, local theta) from either config layout."""
    params = hf.get("rope_parameters")
    if params and "full_attention" in params:  # transformers >= 5: one entry per layer type
        full = dict(params["full_attention"])
        local = dict(params.get("sliding_attention") or {"rope_theta": 10000.0})
        if local.get("rope_type", "default") != "default":
            raise ConfigError(f"{source}: unsupported rope_parameters.sliding_attention {local!r}")
        theta, scaling = _read_rope({"rope_parameters": full}, source)
        return theta, scaling, float(local.get("rope_theta", 10000.0))
    theta, scaling = _read_rope({**hf, "rope_theta": hf.get("rope_theta", 1_000_000.0)}, source)
    return theta, scaling, float(hf.get("rope_local_base_freq", 10000.0))


def read_gemma3(hf: dict, source: str) -> dict[str, Any]:
    allowed = {
        "hidden_activation",
        "hidden_act",
        "attention_bias",
        "query_pre_attn_scalar",
        "sliding_window",
        "layer_types",
        "rope_local_base_freq",
        "final_logit_softcapping",
        "attn_logit_softcapping",
    }
    _check_fields(hf, allowed, source)
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh":
        raise ConfigError(f"{source}: unsupported hidden_activation={act!r} (only 'gelu_pytorch_tanh')")
    _require(hf, "attention_bias", lambda v: not v, source, "q/k/v/o biases are not supported")
    _require(
        hf, "final_logit_softcapping", lambda v: v is None, source, "logit soft-capping is not supported"
    )
    _require(
        hf, "attn_logit_softcapping", lambda v: v is None, source, "attention soft-capping is not supported"
    )
    _require(hf, "use_bidirectional_attention", lambda v: not v, source, "only causal attention")
    layers = int(_need(hf, "num_hidden_layers", source))
    types = hf.get("layer_types")
    if types is None:  # transformers 4 configs: every `pattern`-th layer is global
        pattern = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
    theta, scaling, local_theta = _gemma_rope(hf, source)
    common = _common(hf, source, head_dim_default=256)
    common["tie_word_embeddings"] = bool(hf.get("tie_word_embeddings", True))
    return dict(
        **common,
        rope_theta=theta,
        rope_scaling=scaling,
        local_rope_theta=local_theta,
        hidden_act="gelu_pytorch_tanh",
        qk_norm=True,
        sliding_window=int(_need(hf, "sliding_window", source)) if "sliding_attention" in types else None,
        layer_types=tuple(types),
        norm_offset=1.0,
        embed_scale=True,
        sandwich_norm=True,
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
    )


def read_gpt_oss(hf: dict, source: str) -> dict[str, Any]:
    allowed = {
        "hidden_act",
        "attention_bias",
        "num_local_experts",
        "num_experts_per_tok",
        "experts_per_token",
        "sliding_window",
        "layer_types",
        "swiglu_limit",
        "swiglu_alpha",
        "output_router_logits",
        "router_aux_loss_coef",
        "initial_context_length",
    }
    quant = hf.get("quantization_config")
    if quant is not None and quant.get("quant_method") != "mxfp4":
        raise ConfigError(
            f"{source}: unsupported quantization_config.quant_method {quant.get('quant_method')!r}"
        )
    _check_fields(hf, allowed | {"quantization_config"}, source)  # MXFP4: dequantised at load
    _require(hf, "attention_bias", lambda v: v, source, "GPT-OSS attention has biases")
    layers = int(_need(hf, "num_hidden_layers", source))
    types = hf.get("layer_types") or [
        "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)
    ]
    theta, scaling = _read_rope(hf, source)
    k = hf.get("num_experts_per_tok", hf.get("experts_per_token"))
    aux = float(hf.get("router_aux_loss_coef", 0.9)) if hf.get("output_router_logits") else 0.0
    return dict(
        **_common(hf, source),
        rope_theta=theta,
        rope_scaling=scaling,
        qkv_bias=True,
        o_bias=True,
        attn_sinks=True,
        sliding_window=int(_need(hf, "sliding_window", source)) if "sliding_attention" in types else None,
        layer_types=tuple(types),
        moe=MoeConfig(
            num_experts=int(_need(hf, "num_local_experts", source)),
            top_k=int(k if k is not None else _need(hf, "num_experts_per_tok", source)),
            intermediate_size=int(_need(hf, "intermediate_size", source)),
            aux_loss_coef=aux,
            style="gpt_oss",
            swiglu_alpha=float(hf.get("swiglu_alpha", 1.702)),
            swiglu_limit=float(hf.get("swiglu_limit", 7.0)),
        ),
    )


def write_gpt_oss(cfg) -> dict[str, Any]:
    moe = cfg.moe
    return {
        "attention_bias": True,
        "num_local_experts": moe.num_experts,
        "num_experts_per_tok": moe.top_k,
        "sliding_window": cfg.sliding_window,
        "layer_types": list(cfg.layer_types),
        "swiglu_limit": moe.swiglu_limit,
        "swiglu_alpha": moe.swiglu_alpha,
        "output_router_logits": moe.aux_loss_coef > 0,
        "router_aux_loss_coef": moe.aux_loss_coef or 0.9,
    }


def write_mistral(cfg) -> dict[str, Any]:
    return {"sliding_window": cfg.sliding_window}


def write_qwen3_moe(cfg) -> dict[str, Any]:
    moe = cfg.moe
    return {
        "num_experts": moe.num_experts,
        "num_experts_per_tok": moe.top_k,
        "moe_intermediate_size": moe.intermediate_size,
        "norm_topk_prob": moe.norm_topk_prob,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "output_router_logits": moe.aux_loss_coef > 0,
        "router_aux_loss_coef": moe.aux_loss_coef or 0.001,
        "use_sliding_window": False,
        "attention_bias": False,
    }


def write_gemma3(cfg) -> dict[str, Any]:
    full = {"rope_type": "default", "rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {})}
    return {
        "hidden_activation": cfg.hidden_act,
        "rope_parameters": {
            "full_attention": full,
            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta},
        },
        "sliding_window": cfg.sliding_window,
        "layer_types": list(cfg.layer_types),
        "query_pre_attn_scalar": _int_if_whole(cfg.query_pre_attn_scalar),
        "attention_bias": False,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
    }


def _int_if_whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x  # transformers types this field as int


def read_deepseek_v3(hf: dict, source: str) -> dict[str, Any]:
    from jaxcook.models.deepseek_config import read_deepseek_v3  # its own file (many fields)

    return read_deepseek_v3(hf, source)


def write_deepseek_v3(cfg) -> dict[str, Any]:
    from jaxcook.models.deepseek_config import write_deepseek_v3

    return write_deepseek_v3(cfg)


READERS = {
    "mistral": read_mistral,
    "qwen3_moe": read_qwen3_moe,
    "gemma3_text": read_gemma3,
    "gpt_oss": read_gpt_oss,
    "deepseek_v3": read_deepseek_v3,
    "kimi_k2": read_deepseek_v3,
}
WRITERS = {
    "mistral": write_mistral,
    "qwen3_moe": write_qwen3_moe,
    "gemma3_text": write_gemma3,
    "gpt_oss": write_gpt_oss,
    "deepseek_v3": write_deepseek_v3,
    "kimi_k2": write_deepseek_v3,
}
