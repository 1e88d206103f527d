"""LoRA: configuration, the trainable/frozen split, merging adapters into the base, counting.

Adapters are built into the model at construction (see `jaxcook.models.decoder.Decoder`): every
linear layer that matches the config gets `lora_a` [in, r] (random) and `lora_b` [r, out]
(zero), scaled by `alpha / rank`. Full fine-tuning is the same code with `lora=None` and every
`nnx.Param` trainable.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """Tinker's LoRA options; `alpha=None` means alpha = rank (scale 1)."""

    rank: int = 32
    alpha: float | None = None
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.rank <= 0:
            raise ValueError(f"lora.rank must be positive, got {self.rank}")
        if not (self.train_attn or self.train_mlp or self.train_unembed):
            raise ValueError("LoraConfig trains nothing: set one of train_attn/train_mlp/train_unembed")

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank


def trainable_filter(lora: LoraConfig | None):
    """The nnx filter of trainable variables: adapters with LoRA, every parameter without."""
    return nnx.LoRAParam if lora is not None else nnx.Param


def split(model: nnx.Module, lora: LoraConfig | None):
    """`graphdef, trainable, frozen`: the one split of a model (DESIGN: split once)."""
    return nnx.split(model, trainable_filter(lora), ...)


def count_params(state) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


def count_trainable(model: nnx.Module, lora: LoraConfig | None) -> int:
    """Adapter parameters with LoRA, every parameter without."""
    return count_params(nnx.state(model, trainable_filter(lora)))


def iter_lora_linears(model: nnx.Module):
    """Yield `(path, linear)` for every layer that carries an adapter (not the tied-head one),
    MoE experts' `GroupedLinear`s included (their kernels are [.., E, in, out])."""
    from jaxcook.models.layers import Linear
    from jaxcook.models.moe import GroupedLinear

    for path, node in nnx.iter_graph(model):
        if isinstance(node, (Linear, GroupedLinear)) and node.lora_a is not None:
            yield path, node


def merge_adapters(model: nnx.Module) -> None:
    """Fold every adapter into its kernel in place (`W += A @ B * scale`) and zero the adapter.

    After merging, the forward is unchanged (the adapter contributes 0) and the kernels alone
    hold the fine-tuned weights, ready for export.
    """
    for _, linear in iter_lora_linears(model):
        kernel = linear.kernel[...]
        delta = jnp.einsum("...ir,...ro->...io", linear.lora_a[...], linear.lora_b[...]) * linear.lora_scale
        linear.kernel[...] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
        linear.lora_b[...] = jnp.zeros_like(linear.lora_b[...])
    # A tied-embedding unembed adapter (`lm_head_lora`) has no kernel of its own to fold into;
    # `jaxcook.models.export` unties the head when it writes merged weights.
