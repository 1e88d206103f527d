"""DeepSeek V3's sparse MLP (Kimi K2's too) and its checkpoint tensor names.

Routing (HF `DeepseekV3TopkRouter`, "noaux_tc"), in float32:

    s_NE = sigmoid(x @ router)                          b_E: e_score_correction_bias
    group score = sum of the top-2 (s + b) in each of `n_group` groups; keep `topk_group` groups
    idx_NK = top_k(s + b over the kept groups, K)        (the bias steers the choice only)
    w_NK = s[idx] / (sum_k s[idx] + 1e-20) (norm_topk_prob) x routed_scaling_factor
    y_N = sum_k w_NK expert_idx(x) + shared_experts(x)

The bias is learned outside gradient descent (DeepSeek's auxiliary-loss-free balancing), so it
is a `Buffer`: loaded and exported, never trained. Routed experts are `moe.Experts` (grouped
matmuls over the rows routed to each expert); the `shared_experts` are one SwiGLU MLP of width
`n_shared_experts x moe_intermediate_size` that every token goes through.

Checkpoints store the bias as `mlp.gate.e_score_correction_bias` (our parameter map names it
`mlp.gate.e_score_correction.bias`) and, when they have multi-token-prediction modules, those
as extra layers `model.layers.{L..}` (not part of the forward pass; skipped, as HF does).
Block-FP8 checkpoints (DeepSeek's own) and packed-INT4 ones (Kimi K2 Thinking's) are dequantised on
read (`fp8.py`, `int4.py`).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcook.models import expert_parallel
from jaxcook.models.config import MoeConfig
from jaxcook.models.expert_weights import ExpertSource, split_experts
from jaxcook.models.fp8 import Fp8Source
from jaxcook.models.fused import swiglu
from jaxcook.models.int4 import PackedInt4Source
from jaxcook.models.layers import Buffer, Linear, param
from jaxcook.models.moe import Experts, router_stats


def sigmoid_group_topk(logits_NE, bias_E, moe: MoeConfig):
    """(weights [N, K] float32, expert ids [N, K], scores [N, E]) of DeepSeek's router."""
    N, E = logits_NE.shape
    G = moe.n_group
    scores_NE = jax.nn.sigmoid(logits_NE.astype(jnp.float32))
    choice_NE = scores_NE + jax.lax.stop_gradient(bias_E.astype(jnp.float32))
    per_group = E // G
    top2_NG = jax.lax.top_k(choice_NE.reshape(N, G, per_group), min(2, per_group))[0].sum(-1)
    _, group_NJ = jax.lax.top_k(top2_NG, moe.topk_group)
    keep_NG = jnp.zeros((N, G), bool).at[jnp.arange(N)[:, None], group_NJ].set(True)
    keep_NE = jnp.repeat(keep_NG, per_group, axis=1)
    _, idx_NK = jax.lax.top_k(jnp.where(keep_NE, choice_NE, -jnp.inf), moe.top_k)
    w_NK = jnp.take_along_axis(scores_NE, idx_NK, axis=1)
    if moe.norm_topk_prob:
        w_NK = w_NK / (jnp.sum(w_NK, axis=-1, keepdims=True) + 1e-20)
    return w_NK * moe.routed_scaling_factor, idx_NK, scores_NE


class CorrectionBias(nnx.Module):
    def __init__(self, experts: int):
        self.bias = param(jnp.zeros((experts,), jnp.float32), (None,), Buffer)


class Router(nnx.Module):
    """HF `mlp.gate`: `weight` [E, D] and `e_score_correction_bias` [E], both kept in float32."""

    def __init__(self, hidden: int, experts: int, *, rngs: nnx.Rngs):
        init = jax.nn.initializers.normal(0.02)
        self.kernel = param(init(rngs.params(), (hidden, experts), jnp.float32), ("embed", None))
        self.e_score_correction = CorrectionBias(experts)

    def __call__(self, x_ND):
        kernel = self.kernel[...].astype(jnp.float32)
        return x_ND.astype(jnp.float32) @ kernel, self.e_score_correction.bias[...]


class SharedExperts(nnx.Module):
    """SwiGLU MLP (HF `mlp.shared_experts`): down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, width: int, *, lora_rank: int, lora_alpha, param_dtype, rngs):
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(hidden, width, axes=("embed", "mlp"), **common)
        self.up_proj = Linear(hidden, width, axes=("embed", "mlp"), **common)
        self.down_proj = Linear(width, hidden, axes=("mlp", "embed"), **common)

    def __call__(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class DeepseekMoE(nnx.Module):
    """HF `DeepseekV3MoE`: `gate` (the router), `experts`, `shared_experts`."""

    def __init__(self, moe: MoeConfig, hidden: int, *, lora_rank: int, lora_alpha, param_dtype, rngs):
        self.moe = moe
        self.gate = Router(hidden, moe.num_experts, rngs=rngs)
        mlp = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.experts = Experts(moe, hidden, **mlp)
        self.shared_experts = SharedExperts(hidden, moe.intermediate_size * moe.shared_experts, **mlp)

    def __call__(self, x_BTD, valid_BT=None, impl: str = "blocks"):
        """[B, T, D] out; with `valid_BT`, also this layer's `router_stats` (over the normalised
        sigmoid scores; DeepSeek V3 itself balances with the bias, not with that loss)."""
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        w_NK, idx_NK, scores_NE = sigmoid_group_topk(*self.gate(x_ND), self.moe)
        y_ND = expert_parallel.routed(self.experts, x_ND, w_NK, idx_NK, self.moe.num_experts, impl)
        y_BTD = (y_ND + self.shared_experts(x_ND)).reshape(B, T, D)
        if valid_BT is None:
            return y_BTD
        probs_NE = scores_NE / jnp.sum(scores_NE, axis=-1, keepdims=True)
        return y_BTD, router_stats(idx_NK, probs_NE, valid_BT.reshape(B * T))


_HF_BIAS = re.compile(r"^(.*\.mlp\.gate)\.e_score_correction_bias$")
_OUR_BIAS = re.compile(r"^(.*\.mlp\.gate)\.e_score_correction\.bias$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


class _MainLayers:
    """A weight source without the tensors of layers >= `num_layers` (multi-token prediction)."""

    def __init__(self, source, num_layers: int):
        self.source = source
        self.folder = getattr(source, "folder", None) or getattr(source, "path", None)
        self._names = [
            n for n in source.names() if not ((m := _LAYER.match(n)) and int(m.group(1)) >= num_layers)
        ]

    def names(self):
        return self._names

    def shape(self, name):
        return self.source.shape(name)

    def get(self, name):
        return self.source.get(name)


class DeepseekSource:
    """A weight source in HF DeepSeek V3 names, seen in the parameter map's names."""

    def __init__(self, source, cfg):
        source = _MainLayers(source, cfg.num_layers)
        if cfg.fp8_block_size is not None:  # per-expert [out, in] FP8 tensors: dequantised first
            source = Fp8Source(source, cfg.fp8_block_size)
        if cfg.int4_group_size is not None:  # Kimi's packed INT4 experts: likewise
            source = PackedInt4Source(source, cfg.int4_group_size)
        self.source = ExpertSource(source, cfg.moe.num_experts)
        self.folder = self.source.folder
        self._hf = {_ours(n): n for n in self.source.names()}

    def names(self) -> list[str]:
        return list(self._hf)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.source.shape(self._hf[name]))

    def get(self, name: str) -> np.ndarray:
        return self.source.get(self._hf[name])


def _ours(hf: str) -> str:
    m = _HF_BIAS.match(hf)
    return f"{m.group(1)}.e_score_correction.bias" if m else hf


def to_hf_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exported tensors in the parameter map's names -> DeepSeek V3 checkpoint names."""
    out = {}
    for name, w in split_experts(tensors).items():
        m = _OUR_BIAS.match(name)
        out[f"{m.group(1)}.e_score_correction_bias" if m else name] = w
    return out
