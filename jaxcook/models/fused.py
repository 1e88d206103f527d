"""Hand-written backward passes for the hot spots of a training step: matmuls and SwiGLU.

Autodiff gives the right numbers for all three; these give the same numbers with less traffic:

- `lora_matmul(x, kernel, a, b, scale)` = `x @ kernel + (x @ a) @ b * scale`. The backward keeps
  only `x` (the rank-r product is recomputed, it costs 2 T I r flops), forms the adapter
  gradients as `(g^T x)^T` and `u^T dy` so that every transpose is of a rank-r array, and
  computes the kernel's gradient only when the kernel is differentiated (full fine-tuning of
  an adapted layer), which `symbolic_zeros` tells it.
- `matmul(x, kernel)`: the kernel gradient `x^T dy` transposes the narrower of `x` and `dy`.
- `swiglu(gate, up)` = `silu(gate) * up`, saving `gate` and `up` and recomputing the sigmoid,
  where autodiff keeps four [T, F] intermediates per layer.

Measured on SmolLM2-135M, 8 x 256, f32, 2 CPU cores: without them XLA:CPU transposed every
[T, F] MLP gradient to feed the rank-8 adapter products, 1.8 s of an 8.1 s LoRA forward/backward
in the profile (5.2 s with them); full fine-tuning's forward/backward took 8.5 s without
`matmul`, 6.7 s with it. `benchmarks/train_step.py` times the whole step.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def lora_matmul(x, kernel, a, b, scale: float):
    return x @ kernel + ((x @ a) @ b) * jnp.asarray(scale, x.dtype)


def _lora_fwd(x, kernel, a, b, scale):
    y = lora_matmul(x.value, kernel.value, a.value, b.value, scale)
    # The residual structure records (statically) whether the kernel needs a gradient.
    return y, (x.value, kernel.value, a.value, b.value, () if kernel.perturbed else None)


def _lora_bwd(scale, res, dy):
    x, kernel, a, b, kernel_grad = res
    s = jnp.asarray(scale, dy.dtype)
    lead = x.shape[:-1]
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    u = x2 @ a  # [T, r]
    g = (dy2 @ b.T) * s  # [T, r]
    dx = (dy2 @ kernel.T + g @ a.T).reshape(*lead, x.shape[-1])
    da = (g.T @ x2).T
    db = (u.T @ dy2) * s
    dkernel = _weight_grad(x2, dy2).astype(kernel.dtype) if kernel_grad is not None else None  # None: zero
    return dx, dkernel, da.astype(a.dtype), db.astype(b.dtype)


lora_matmul.defvjp(_lora_fwd, _lora_bwd, symbolic_zeros=True)


@jax.custom_vjp
def matmul(x, kernel):
    """`x @ kernel` whose kernel gradient transposes the smaller of its two [T, *] operands."""
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _weight_grad(x2, dy2):
    """`x2^T @ dy2` ([in, out]), transposing whichever operand has fewer columns."""
    return x2.T @ dy2 if x2.shape[1] <= dy2.shape[1] else (dy2.T @ x2).T


def _matmul_bwd(res, dy):
    x, kernel = res
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    return dy @ kernel.T, _weight_grad(x2, dy2).astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_vjp
def swiglu(gate, up):
    return jax.nn.silu(gate) * up


def _swiglu_fwd(gate, up):
    return swiglu(gate, up), (gate, up)


def _swiglu_bwd(res, dh):
    gate, up = res
    sig = jax.nn.sigmoid(gate)
    silu = gate * sig
    dgate = dh * up * sig * (1 + gate * (1 - sig))
    return dgate, dh * silu


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)
