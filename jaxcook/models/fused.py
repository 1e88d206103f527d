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

With `bf16=True` the kernel products (forward, input gradient, kernel gradient) take bf16
operands with f32 accumulation through `jaxcook.kernels.cpu_gemm` (oneMKL on AMX on CPU, XLA's
dot elsewhere), as `torch.autocast(dtype=bfloat16)` does; the rank-r adapter products, and every
value between the matmuls, stay in the activations' dtype.

Measured on SmolLM2-135M, 8 x 256, f32, 2 CPU cores: without them XLA:CPU transposed every
[T, F] MLP gradient to feed the rank-8 adapter products, 1.8 s of an 8.1 s LoRA forward/backward
in the profile (5.2 s with them); full fine-tuning's forward/backward took 8.5 s without
`matmul`, 6.7 s with it. `benchmarks/train_step.py` times the whole step.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxcook.kernels.cpu_gemm import gemm


def _kernel_product(x, kernel, bf16: bool):
    """`x @ kernel` for x [..., in]."""
    if not bf16:
        return x @ kernel
    y = gemm(x.reshape(-1, x.shape[-1]), kernel)
    return y.reshape(*x.shape[:-1], y.shape[-1]).astype(x.dtype)


def _input_grad(dy, kernel, bf16: bool):
    """`dy @ kernel^T` for dy [..., out]; the bf16 kernel reads the kernel transposed in place."""
    if not bf16:
        return dy @ kernel.T
    dx = gemm(dy.reshape(-1, dy.shape[-1]), kernel, trans_b=True)
    return dx.reshape(*dy.shape[:-1], dx.shape[-1]).astype(dy.dtype)


def _weight_grad(x2, dy2, bf16: bool = False):
    """`x2^T @ dy2` ([in, out]), transposing whichever operand has fewer columns (bf16: neither)."""
    if bf16:
        return gemm(x2, dy2, trans_a=True)
    return x2.T @ dy2 if x2.shape[1] <= dy2.shape[1] else (dy2.T @ x2).T


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def lora_matmul(x, kernel, a, b, scale: float, bf16: bool = False):
    return _kernel_product(x, kernel, bf16) + ((x @ a) @ b) * jnp.asarray(scale, x.dtype)


def _lora_fwd(x, kernel, a, b, scale, bf16):
    y = lora_matmul(x.value, kernel.value, a.value, b.value, scale, bf16)
    # The residual structure records (statically) whether the kernel needs a gradient.
    return y, (x.value, kernel.value, a.value, b.value, () if kernel.perturbed else None)


def _lora_bwd(scale, bf16, res, dy):
    x, kernel, a, b, kernel_grad = res
    s = jnp.asarray(scale, dy.dtype)
    lead = x.shape[:-1]
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    u = x2 @ a  # [T, r]
    g = (dy2 @ b.T) * s  # [T, r]
    dx = (_input_grad(dy2, kernel, bf16) + g @ a.T).reshape(*lead, x.shape[-1])
    da = (g.T @ x2).T
    db = (u.T @ dy2) * s
    dkernel = None  # None: a symbolic zero (frozen kernel)
    if kernel_grad is not None:
        dkernel = _weight_grad(x2, dy2, bf16).astype(kernel.dtype)
    return dx, dkernel, da.astype(a.dtype), db.astype(b.dtype)


lora_matmul.defvjp(_lora_fwd, _lora_bwd, symbolic_zeros=True)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(x, kernel, bf16: bool = False):
    """`x @ kernel` whose kernel gradient transposes the smaller of its two [T, *] operands."""
    return _kernel_product(x, kernel, bf16)


def _matmul_fwd(x, kernel, bf16):
    return matmul(x, kernel, bf16), (x, kernel)


def _matmul_bwd(bf16, res, dy):
    x, kernel = res
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    return _input_grad(dy, kernel, bf16), _weight_grad(x2, dy2, bf16).astype(kernel.dtype)


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
