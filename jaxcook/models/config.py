"""Model configuration of the decoder families, read from a Hugging Face `config.json`.

One config covers Llama 3.x (with Llama 3.1 rope scaling), Qwen2/2.5 (bias on q/k/v), Qwen3
(RMSNorm on q and k) and SmolLM2 (Llama with tied embeddings), read here; Mistral, Qwen3-MoE
and Gemma 3 are read by `jaxcook.models.families` (strictly: an unsupported field is an error
naming it). Both the transformers-4 layout (`rope_theta`, `rope_scaling`) and the
transformers-5 layout (`rope_parameters`) are read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# model_type -> architecture name written back on export, and per-family defaults.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"architecture": "LlamaForCausalLM", "qkv_bias": False, "qk_norm": False},
    "qwen2": {"architecture": "Qwen2ForCausalLM", "qkv_bias": True, "qk_norm": False},
    "qwen3": {"architecture": "Qwen3ForCausalLM", "qkv_bias": False, "qk_norm": True},
    "mistral": {"architecture": "MistralForCausalLM", "qkv_bias": False, "qk_norm": False},
    "qwen3_moe": {"architecture": "Qwen3MoeForCausalLM", "qkv_bias": False, "qk_norm": True},
    "gemma3_text": {"architecture": "Gemma3ForCausalLM", "qkv_bias": False, "qk_norm": True},
    "gpt_oss": {"architecture": "GptOssForCausalLM", "qkv_bias": True, "qk_norm": False},
    "deepseek_v3": {"architecture": "DeepseekV3ForCausalLM", "qkv_bias": False, "qk_norm": False},
    # Kimi K2 ships a DeepSeek V3 config under its own model_type (exported as deepseek_v3)
    "kimi_k2": {"architecture": "DeepseekV3ForCausalLM", "qkv_bias": False, "qk_norm": False},
}
LAYER_TYPES = ("full_attention", "sliding_attention")
ROPE_TYPES = ("default", "llama3", "linear", "yarn")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class MoeConfig:
    """A sparse MLP: `num_experts` experts of width `intermediate_size`, `top_k` per token.

    `aux_loss_coef > 0` adds the router's load-balancing loss (Switch Transformer, as HF's
    `load_balancing_loss_func`) times the coefficient to the gradient of every training step.
    """

    num_experts: int
    top_k: int
    intermediate_size: int
    norm_topk_prob: bool = True
    aux_loss_coef: float = 0.0
    # "qwen3": softmax, then top-k; SwiGLU experts. "gpt_oss": top-k logits, then softmax;
    # biased experts with GPT-OSS's clamped GLU (`swiglu_alpha`, `swiglu_limit`).
    # "deepseek_v3": sigmoid scores, group-limited top-k on scores + correction bias, weights
    # times `routed_scaling_factor`, plus `shared_experts` always-on experts (`deepseek.py`).
    style: str = "qwen3"
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    shared_experts: int = 0

    def __post_init__(self):
        if self.style not in ("qwen3", "gpt_oss", "deepseek_v3"):
            raise ConfigError(f"unsupported MoE style {self.style!r}")
        if self.num_experts % self.n_group or not 0 < self.topk_group <= self.n_group:
            raise ConfigError(
                f"n_group={self.n_group} must divide n_routed_experts={self.num_experts} and "
                f"topk_group={self.topk_group} be in [1, n_group]"
            )
        if self.top_k > self.topk_group * (self.num_experts // self.n_group):
            raise ConfigError(
                f"num_experts_per_tok={self.top_k} exceeds the experts of topk_group={self.topk_group} groups"
            )
        if not 0 < self.top_k <= self.num_experts:
            raise ConfigError(
                f"num_experts_per_tok={self.top_k} must be in [1, num_experts={self.num_experts}]"
            )


@dataclass(frozen=True, kw_only=True)
class MlaConfig:
    """Multi-head latent attention (DeepSeek V3, `mla.py`): queries through a rank-`q_lora_rank`
    bottleneck (None: a full `q_proj`), keys and values from a shared rank-`kv_lora_rank` latent;
    heads of `qk_nope_head_dim` + `qk_rope_head_dim` (rope on the second part only) for queries
    and keys, `v_head_dim` for values. `rope_interleave`: the rope dimensions come in (even, odd)
    pairs, as DeepSeek's checkpoints store them."""

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rope_interleave: bool = True


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "llama3", "factor": ...} or None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    max_position_embeddings: int = 8192
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    hidden_act: str = "silu"  # or "gelu_pytorch_tanh" (Gemma)
    sliding_window: int | None = None  # keys at most this many slots back (incl. itself)
    layer_types: tuple[str, ...] | None = None  # per layer, from LAYER_TYPES; None: all full
    local_rope_theta: float | None = None  # rope base of sliding layers (Gemma 3), else rope_theta
    moe: MoeConfig | None = None
    mla: MlaConfig | None = None  # multi-head latent attention instead of (grouped-query) attention
    first_dense_layers: int = 0  # layers with the dense MLP before the MoE ones (DeepSeek V3)
    norm_offset: float = 0.0  # RMSNorm scales by (offset + weight): Gemma stores weight - 1
    embed_scale: bool = False  # embeddings times sqrt(hidden_size) (Gemma)
    sandwich_norm: bool = False  # norms after attention and MLP too (Gemma)
    query_pre_attn_scalar: float | None = None  # attention scale scalar^-1/2 instead of head_dim
    o_bias: bool = False  # a bias on the attention output projection (GPT-OSS)
    attn_sinks: bool = False  # a learned per-head logit every query also attends to (GPT-OSS)
    # block-FP8 checkpoint (DeepSeek V3): (rows, cols) of a weight_scale_inv block; dequantised on
    # load (`fp8.py`), so never exported
    fp8_block_size: tuple[int, int] | None = None
    # compressed-tensors packed INT4 checkpoint (Kimi K2 Thinking): input columns per scale;
    # dequantised on load (`int4.py`), so never exported
    int4_group_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown HF keys kept for export

    def __post_init__(self):
        if self.model_type not in FAMILIES:
            raise ConfigError(f"unsupported model_type {self.model_type!r}; supported: {sorted(FAMILIES)}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}"
            )
        if self.first_dense_layers and not (self.moe and 0 < self.first_dense_layers < self.num_layers):
            raise ConfigError(
                f"first_k_dense_replace={self.first_dense_layers} needs a MoE model with more than "
                f"that many layers (num_hidden_layers={self.num_layers})"
            )
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ConfigError(f"unsupported rope_scaling.rope_type {rope_type!r}; supported: {ROPE_TYPES}")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers:
                raise ConfigError(
                    f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
                )
            bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if bad:
                raise ConfigError(f"unsupported layer_types {bad}; supported: {LAYER_TYPES}")
            if "sliding_attention" in self.layer_types and not self.sliding_window:
                raise ConfigError("layer_types has sliding_attention layers but sliding_window is not set")

    @property
    def stacked_layers(self) -> int:
        """Layers in the decoder's scanned stack: all but the dense prefix (`first_dense_layers`)."""
        return self.num_layers - self.first_dense_layers

    def sliding_layers(self) -> tuple[bool, ...]:
        """Per layer: whether it attends over a sliding window."""
        if self.layer_types is None:
            return (self.sliding_window is not None,) * self.num_layers
        return tuple(t == "sliding_attention" for t in self.layer_types)

    def __hash__(self):  # dict fields: hash a canonical JSON (configs are static jit arguments)
        return hash(json.dumps(asdict(self), sort_keys=True, default=str))

    @property
    def architecture(self) -> str:
        return FAMILIES[self.model_type]["architecture"]

    @classmethod
    def from_hf(cls, hf: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
        """Build from a parsed HF config dict; errors name the field and the source."""

        def need(key: str):
            if key not in hf or hf[key] is None:
                raise ConfigError(f"{source}: missing required field {key!r}")
            return hf[key]

        model_type = need("model_type")
        from jaxcook.models import families

        if model_type in families.READERS:
            return cls(**families.READERS[model_type](hf, source))
        if model_type not in FAMILIES:
            raise ConfigError(
                f"{source}: unsupported model_type {model_type!r}; supported: {sorted(FAMILIES)}"
            )
        if hf.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: unsupported hidden_act {hf['hidden_act']!r} (only 'silu')")
        if hf.get("use_sliding_window"):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported")
        if hf.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias=true is not supported")
        family = FAMILIES[model_type]
        heads = int(need("num_attention_heads"))
        hidden = int(need("hidden_size"))
        rope_theta, rope_scaling = _read_rope(hf, source)
        qkv_bias = hf.get("attention_bias", family["qkv_bias"])
        if model_type == "qwen2":  # Qwen2 always has q/k/v bias; the field is absent in its configs.
            qkv_bias = True
        known = {
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
            "tie_word_embeddings",
            "attention_bias",
            "max_position_embeddings",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
            "hidden_act",
        }
        return cls(
            model_type=model_type,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=bool(qkv_bias),
            qk_norm=family["qk_norm"],
            max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            extra={k: v for k, v in hf.items() if k not in known},
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            hf = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"{path}: no config.json") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
        return cls.from_hf(hf, source=str(path))

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict that transformers reads back into the same architecture."""
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            rope.update(self.rope_scaling)
        hf = {
            **{k: v for k, v in self.extra.items() if k not in ("architectures", "transformers_version")},
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "rope_scaling": dict(self.rope_scaling) if self.rope_scaling else None,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": self.hidden_act,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        from jaxcook.models import families

        if self.model_type in families.WRITERS:
            hf.update(families.WRITERS[self.model_type](self))
        if self.model_type == "llama":
            hf["attention_bias"] = self.qkv_bias
            hf["mlp_bias"] = False
        return hf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_rope(hf: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    params = hf.get("rope_parameters")
    if params:  # transformers >= 5
        params = dict(params)
        theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        rope_type = params.get("rope_type", params.get("type", "default"))
    else:
        theta = float(hf.get("rope_theta", 10000.0))
        params = dict(hf.get("rope_scaling") or {})
        rope_type = params.get("rope_type", params.get("type", "default")) if params else "default"
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"{source}: unsupported rope type {rope_type!r}; supported: {ROPE_TYPES}")
    if rope_type == "default":
        return theta, None
    params.pop("type", None)
    params["rope_type"] = rope_type
    required = {
        "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
        "linear": ("factor",),
        "yarn": ("factor", "original_max_position_embeddings"),
    }[rope_type]
    for key in required:
        if key not in params:
            raise ConfigError(f"{source}: rope scaling {rope_type!r} needs field {key!r}")
    return theta, params
