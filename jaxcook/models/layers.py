"""Building blocks of the decoder: a linear layer that can carry a LoRA adapter, RMSNorm, embedding.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv_heads`, `vocab`, and
`layers` once stacked) that the sharding rules map onto a device mesh. LoRA factors are
`nnx.LoRAParam`s, so `nnx.split(model, nnx.LoRAParam, ...)` separates adapters from the base.
A layer's output is pinned (`sharding.constrain`, a no-op outside a mesh context) to the rows
over the batch axes and its last axis as its kernel's output axis: column-parallel layers
(heads, mlp, vocab) keep their output split over `tensor`, row-parallel ones (embed) return
it whole, which is where XLA inserts the reduction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcook.engine.sharding import constrain
from jaxcook.kernels import cpu_gemm
from jaxcook.models.fused import lora_matmul, matmul

MATMUL_DTYPES = ("float32", "bfloat16")


def set_matmul_dtype(model: nnx.Module, dtype: str) -> nnx.Module:
    """Run every kernel product of `model` (projections, MoE experts, the tied unembedding) with `dtype`
    operands: "bfloat16" = bf16 operands, f32 accumulation (AMX through oneMKL on a CPU that has
    it, see `jaxcook.kernels.cpu_gemm`); "float32" = the activations' dtype. A static attribute,
    so it is part of the graph definition and of every jit cache key."""
    if dtype not in MATMUL_DTYPES:
        raise ValueError(f"model.matmul_dtype={dtype!r}: expected one of {MATMUL_DTYPES}")
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Linear | Embed) or hasattr(module, "bf16_matmul"):  # and MoE experts
            module.bf16_matmul = dtype == "bfloat16"
    return model


class Buffer(nnx.Variable):
    """A checkpoint weight that is never trained (DeepSeek's router correction bias): not an
    `nnx.Param`, so full fine-tuning leaves it be; loaded and exported like a parameter."""


def param(value, names: tuple[str | None, ...], kind=nnx.Param):
    return kind(value, sharding_names=names, eager_sharding=False)


def constrain_out(y, axis: str | None):
    """Rows over the batch axes, the last axis as `axis` ([B, ..., out] or [N, out])."""
    return constrain(y, ("batch",) + (None,) * (y.ndim - 2) + (axis,))


def lora_a_init(key, shape) -> jax.Array:
    """PEFT's default for A: kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); shape [..., in, r]."""
    bound = shape[-2] ** -0.5
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class Linear(nnx.Module):
    """`y = x @ kernel (+ bias) + (x @ lora_a) @ lora_b * alpha/rank`; kernel is [in, out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        axes: tuple[str | None, str | None],
        use_bias: bool = False,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        init = jax.nn.initializers.normal(0.02)
        self.kernel = param(init(rngs.params(), (in_features, out_features), param_dtype), axes)
        self.bias = param(jnp.zeros((out_features,), param_dtype), (axes[1],)) if use_bias else None
        # B = 0, so a fresh adapter leaves the output unchanged. Adapters are float32.
        self.lora_a = (
            param(lora_a_init(rngs.lora(), (in_features, lora_rank)), (axes[0], None), nnx.LoRAParam)
            if lora_rank
            else None
        )
        self.lora_b = (
            param(jnp.zeros((lora_rank, out_features), jnp.float32), (None, axes[1]), nnx.LoRAParam)
            if lora_rank
            else None
        )
        self.lora_scale = (
            float(lora_alpha if lora_alpha is not None else lora_rank) / lora_rank if lora_rank else 0.0
        )
        self.out_axis = axes[1]
        self.bf16_matmul = False  # static: kernel products in bf16 (see `set_matmul_dtype`)

    def __call__(self, x):
        kernel = self.kernel[...].astype(x.dtype)
        if self.lora_a is None:
            y = matmul(x, kernel, self.bf16_matmul)
        else:
            a, b = self.lora_a[...].astype(x.dtype), self.lora_b[...].astype(x.dtype)
            y = lora_matmul(x, kernel, a, b, self.lora_scale, self.bf16_matmul)
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return constrain_out(y, self.out_axis)


class RMSNorm(nnx.Module):
    """`x / sqrt(mean(x^2) + eps) * (offset + scale)`, computed in float32 (Gemma: offset 1)."""

    def __init__(
        self,
        dim: int,
        *,
        eps: float,
        axis_name: str | None = "embed",
        offset: float = 0.0,
        param_dtype=jnp.float32,
    ):
        self.scale = param(jnp.full((dim,), 1.0 - offset, param_dtype), (axis_name,))
        self.eps, self.offset = eps, offset

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(jnp.float32)
        return (x32 * (scale + self.offset if self.offset else scale)).astype(x.dtype)


class Embed(nnx.Module):
    """Token embedding; `scaled` multiplies the looked-up rows by sqrt(dim) (Gemma), not the
    tied unembedding."""

    def __init__(
        self, vocab: int, dim: int, *, scaled: bool = False, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        init = jax.nn.initializers.normal(0.02)
        self.embedding = param(init(rngs.params(), (vocab, dim), param_dtype), ("vocab", "embed"))
        self.scale = float(dim) ** 0.5 if scaled else None
        self.bf16_matmul = False  # static: the tied unembedding in bf16 (see `set_matmul_dtype`)

    def __call__(self, tokens):
        x = jnp.take(self.embedding[...], tokens, axis=0)
        # Gemma rounds the scale to the embedding dtype before multiplying.
        return constrain_out(x if self.scale is None else x * jnp.asarray(self.scale, x.dtype), None)

    def attend(self, x):
        """Tied unembedding: logits = x @ embedding.T (vocabulary-parallel like the table)."""
        if self.bf16_matmul:
            return constrain_out(cpu_gemm.dot(x, self.embedding[...], True), "vocab")
        return constrain_out(x @ self.embedding[...].astype(x.dtype).T, "vocab")


class LoraAdapter(nnx.Module):
    """An adapter without a kernel of its own: the unembed adapter of tied-embedding models."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rank: int,
        alpha: float | None,
        axes: tuple[str | None, str | None],
        rngs: nnx.Rngs,
    ):
        a = lora_a_init(rngs.lora(), (in_features, rank))
        self.lora_a = param(a, (axes[0], None), nnx.LoRAParam)
        self.lora_b = param(jnp.zeros((rank, out_features), jnp.float32), (None, axes[1]), nnx.LoRAParam)
        self.lora_scale = float(alpha if alpha is not None else rank) / rank
        self.out_axis = axes[1]

    def __call__(self, x):
        a, b = self.lora_a[...].astype(x.dtype), self.lora_b[...].astype(x.dtype)
        return constrain_out(((x @ a) @ b) * jnp.asarray(self.lora_scale, x.dtype), self.out_axis)
