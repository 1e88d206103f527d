"""The sparse MLP of Qwen3-MoE: softmax top-k routing over SwiGLU experts, as grouped matmuls.

    probs_NE = softmax(x @ router)           (float32)
    w_NK, idx_NK = top_k(probs_NE, K)        w_NK /= sum_k w_NK  (norm_topk_prob)
    y_N = sum_k w_NK * down_e(silu(gate_e(x)) * up_e(x)),  e = idx_NK

Experts are `GroupedLinear`s: E kernels [E, in, out] (stacked over layers like every layer
parameter), each with an optional LoRA adapter of its own (A [E, in, r], B [E, r, out]).
The rows routed to each expert are grouped by `jaxcook.models.grouped`.

Load balancing (Switch Transformer eqs. 4-6, HF `load_balancing_loss_func`): with c_e the
top-k assignments and p_e the summed router probabilities of expert e over every layer's
valid tokens, and R = layers x valid tokens, `aux = E * sum_e (c_e / R) (p_e / R)`.
`router_stats` returns (c_E, p_E) of one layer; the decoder sums them over layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcook.models import expert_parallel, grouped
from jaxcook.models.config import MoeConfig
from jaxcook.models.fused import swiglu
from jaxcook.models.layers import Linear, lora_a_init, param


class GroupedLinear(nnx.Module):
    """E linear maps `x @ kernel[e] (+ (x @ lora_a[e]) @ lora_b[e] * alpha/rank)` over grouped rows."""

    def __init__(
        self,
        experts: int,
        in_features: int,
        out_features: int,
        *,
        axes: tuple[str | None, str | None],
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        init = jax.nn.initializers.normal(0.02)
        shape = (experts, in_features, out_features)
        self.kernel = param(init(rngs.params(), shape, param_dtype), ("expert", *axes))
        self.lora_a = (
            param(
                lora_a_init(rngs.lora(), (experts, in_features, lora_rank)),
                ("expert", axes[0], None),
                nnx.LoRAParam,
            )
            if lora_rank
            else None
        )
        self.lora_b = (
            param(
                jnp.zeros((experts, lora_rank, out_features), jnp.float32),
                ("expert", None, axes[1]),
                nnx.LoRAParam,
            )
            if lora_rank
            else None
        )
        self.lora_scale = (
            float(lora_alpha if lora_alpha is not None else lora_rank) / lora_rank if lora_rank else 0.0
        )
        self.bf16_matmul = False  # static: the kernel products in bf16 (see `set_matmul_dtype`)

    def __call__(self, x_GBI, d: grouped.Dispatch, impl: str = "blocks"):
        kernel = self.kernel[...].astype(x_GBI.dtype)  # bf16: cast in the product, dw stays f32
        y = grouped.grouped_matmul(x_GBI, kernel, d, impl, self.bf16_matmul)
        if self.lora_a is not None:  # bf16: the adapters' products too, as under torch.autocast
            a, b = self.lora_a[...].astype(x_GBI.dtype), self.lora_b[...].astype(x_GBI.dtype)
            u = grouped.grouped_matmul(x_GBI, a, d, impl, self.bf16_matmul)
            y = y + grouped.grouped_matmul(u, b, d, impl, self.bf16_matmul) * jnp.asarray(
                self.lora_scale, y.dtype
            )
        return y


class Experts(nnx.Module):
    """E SwiGLU experts (HF `mlp.experts.{e}.{gate,up,down}_proj`)."""

    def __init__(self, moe: MoeConfig, hidden: int, *, lora_rank: int, lora_alpha, param_dtype, rngs):
        E, D, F = moe.num_experts, hidden, moe.intermediate_size
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = GroupedLinear(E, D, F, axes=("embed", "mlp"), **common)
        self.up_proj = GroupedLinear(E, D, F, axes=("embed", "mlp"), **common)
        self.down_proj = GroupedLinear(E, F, D, axes=("mlp", "embed"), **common)

    def __call__(self, x_GBD, d: grouped.Dispatch, impl: str = "blocks"):
        h_GBF = swiglu(self.gate_proj(x_GBD, d, impl), self.up_proj(x_GBD, d, impl))
        return self.down_proj(h_GBF, d, impl)


def softmax_topk(logits_NE, k: int, normalize: bool):
    """(weights [N, K] in the logits' dtype, expert ids [N, K], float32 probabilities [N, E])."""
    probs_NE = jax.nn.softmax(logits_NE.astype(jnp.float32), axis=-1)
    w_NK, idx_NK = jax.lax.top_k(probs_NE, k)
    if normalize:
        w_NK = w_NK / jnp.sum(w_NK, axis=-1, keepdims=True)
    return w_NK.astype(logits_NE.dtype), idx_NK, probs_NE


def router_stats(idx_NK, probs_NE, valid_N):
    """(top-k assignments per expert [E], summed probabilities per expert [E]) over valid tokens."""
    E = probs_NE.shape[-1]
    v_N = valid_N.astype(jnp.float32)
    counts_E = jnp.zeros((E,), jnp.float32).at[idx_NK].add(jnp.broadcast_to(v_N[:, None], idx_NK.shape))
    return jax.lax.stop_gradient(counts_E), jnp.sum(probs_NE * v_N[:, None], axis=0)


def load_balancing_loss(counts_LE, probs_LE, valid_tokens):
    """E * sum_e (c_e / R) (p_e / R), R = layers x valid tokens (see the module docstring)."""
    L, E = counts_LE.shape
    rows = L * jnp.maximum(valid_tokens, 1)
    return E * jnp.sum((counts_LE.sum(0) / rows) * (probs_LE.sum(0) / rows))


@jax.custom_vjp
def add_to_objective(x, loss):
    """Identity on `x`; the backward pass gives `loss` the cotangent 1, as if `loss` were added to
    whatever scalar is being differentiated (the aux loss rides on the hidden states)."""
    return x


def _add_fwd(x, loss):
    return x, jnp.zeros((), loss.dtype)


def _add_bwd(zero, g):
    return g, jnp.ones_like(zero)


add_to_objective.defvjp(_add_fwd, _add_bwd)


class MoE(nnx.Module):
    """HF `Qwen3MoeSparseMoeBlock`: `gate` (the router, [D, E]) and `experts`."""

    def __init__(self, moe: MoeConfig, hidden: int, *, lora_rank: int, lora_alpha, param_dtype, rngs):
        self.moe = moe
        self.gate = Linear(hidden, moe.num_experts, axes=("embed", None), param_dtype=param_dtype, rngs=rngs)
        self.experts = Experts(
            moe, hidden, lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x_BTD, valid_BT=None, impl: str = "blocks"):
        """[B, T, D] out; with `valid_BT`, also this layer's `router_stats`."""
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        w_NK, idx_NK, probs_NE = softmax_topk(self.gate(x_ND), self.moe.top_k, self.moe.norm_topk_prob)
        y_ND = expert_parallel.routed(self.experts, x_ND, w_NK, idx_NK, self.moe.num_experts, impl)
        y_BTD = y_ND.reshape(B, T, D)
        if valid_BT is None:
            return y_BTD
        return y_BTD, router_stats(idx_NK, probs_NE, valid_BT.reshape(B * T))
