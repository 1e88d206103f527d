"""The optimizer behind `optim_step(AdamParams)`: AdamW equal to torch.optim.AdamW.

Hyperparameters are not baked into the transformation: they come with every update as f32
scalars (`adam_hparams(AdamParams)`), so a new learning rate each step does not recompile.

    tx = make_optimizer()
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params, hparams=adam_hparams(adam))
    params = optax.apply_updates(params, updates)

One update, for step t (1-based) with g the accumulated gradient:
  g <- g * min(1, c / (||g||_2 + 1e-6)) if c = grad_clip_norm > 0 (global norm over all leaves,
       as torch.nn.utils.clip_grad_norm_, applied before Adam);
  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
  p <- p - lr * wd * p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
(Loshchilov & Hutter 2019, decoupled weight decay; the bias-corrected form torch uses).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcook.types import AdamParams

HPARAM_NAMES = ("learning_rate", "b1", "b2", "eps", "weight_decay", "grad_clip_norm")


class AdamWState(NamedTuple):
    count: jax.Array  # int32 scalar: number of updates applied
    mu: optax.Params  # first moment, like params
    nu: optax.Params  # second moment, like params


def adam_hparams(adam: AdamParams) -> dict[str, np.ndarray]:
    """Tinker's `AdamParams` as the f32 scalars `make_optimizer().update(..., hparams=)` takes."""
    checks = {
        "learning_rate": adam.learning_rate >= 0,
        "beta1": 0 <= adam.beta1 < 1,
        "beta2": 0 <= adam.beta2 < 1,
        "eps": adam.eps >= 0,
        "weight_decay": adam.weight_decay >= 0,
        "grad_clip_norm": adam.grad_clip_norm >= 0,
    }
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"AdamParams.{name}={getattr(adam, name)} is out of range")
    values = (adam.learning_rate, adam.beta1, adam.beta2, adam.eps, adam.weight_decay, adam.grad_clip_norm)
    return {k: np.asarray(v, np.float32) for k, v in zip(HPARAM_NAMES, values, strict=True)}


def clip_scale(grad_norm, grad_clip_norm):
    """Factor torch's clip_grad_norm_ multiplies the gradients by; 1 when clipping is off (0)."""
    return jnp.where(grad_clip_norm > 0, jnp.minimum(1.0, grad_clip_norm / (grad_norm + 1e-6)), 1.0)


def make_optimizer() -> optax.GradientTransformationExtraArgs:
    """AdamW with global-norm clipping; `update(grads, state, params, *, hparams)`."""

    def init(params):
        # Moments in f32 whatever the param dtype; two separate trees so both can be donated.
        def zeros():
            return jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

        return AdamWState(count=jnp.zeros((), jnp.int32), mu=zeros(), nu=zeros())

    def update(grads, state, params=None, *, hparams, **_extra):
        if params is None:
            raise ValueError("AdamW needs params for its decoupled weight decay")
        missing = [k for k in HPARAM_NAMES if k not in hparams]
        if missing:
            raise KeyError(f"hparams lacks {missing}; build it with adam_hparams(AdamParams)")
        lr, b1, b2, eps, wd = (hparams[k] for k in HPARAM_NAMES[:5])
        scale = clip_scale(optax.global_norm(grads), hparams["grad_clip_norm"])
        count = state.count + 1
        bc1 = 1.0 - b1 ** count.astype(jnp.float32)
        bc2 = 1.0 - b2 ** count.astype(jnp.float32)
        grads = jax.tree.map(lambda g: scale * g.astype(jnp.float32), grads)
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, grads)

        def step(p, m, v):
            adam = (lr / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)
            return (-lr * wd * p - adam).astype(p.dtype)

        updates = jax.tree.map(step, params, mu, nu)
        return updates, AdamWState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformationExtraArgs(init, update)


def optimizer_metrics(grads, updates, params, hparams) -> dict[str, jax.Array]:
    """What to log for one update (JAX scalars; computed in jit next to the update)."""
    grad_norm = optax.global_norm(grads)
    return {
        "optim/grad_norm": grad_norm,
        "optim/clip_scale": clip_scale(grad_norm, hparams["grad_clip_norm"]),
        "optim/update_norm": optax.global_norm(updates),
        "optim/param_norm": optax.global_norm(params),
        "optim/lr": jnp.asarray(hparams["learning_rate"], jnp.float32),
    }
