"""Building blocks of the decoder: a linear layer that can carry a LoRA adapter, RMSNorm, embedding.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv_heads`, `vocab`, and
`layers` once stacked) that the sharding rules map onto a device mesh. LoRA factors are
`nnx.LoRAParam`s, so `nnx.split(model, nnx.LoRAParam, ...)` separates adapters from the base.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcook.models.fused import lora_matmul, matmul


def param(value, names: tuple[str | None, ...], kind=nnx.Param):
    return kind(value, sharding_names=names, eager_sharding=False)


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

    def __call__(self, x):
        kernel = self.kernel[...].astype(x.dtype)
        if self.lora_a is None:
            y = matmul(x, kernel)
        else:
            a, b = self.lora_a[...].astype(x.dtype), self.lora_b[...].astype(x.dtype)
            y = lora_matmul(x, kernel, a, b, self.lora_scale)
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return y


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

    def __call__(self, tokens):
        x = jnp.take(self.embedding[...], tokens, axis=0)
        # Gemma rounds the scale to the embedding dtype before multiplying.
        return x if self.scale is None else x * jnp.asarray(self.scale, x.dtype)

    def attend(self, x):
        """Tied unembedding: logits = x @ embedding.T."""
        return x @ self.embedding[...].astype(x.dtype).T


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

    def __call__(self, x):
        a, b = self.lora_a[...].astype(x.dtype), self.lora_b[...].astype(x.dtype)
        return ((x @ a) @ b) * jnp.asarray(self.lora_scale, x.dtype)
