"""The pure train step: `forward_backward` accumulates gradients, `optim_step` applies them.

    state, out = forward_backward(state, frozen, batch)      # grads summed into state.grad_accum
    state, metrics = optim_step(state, hparams)               # AdamW on the accumulated sum

Both are jitted once per (loss, loss config) and donate the state; the frozen base weights are
an argument, never donated. Losses are sums (Tinker semantics), so accumulating over k
microbatches equals one step on their union. No NNX object crosses the jit boundary: the model
is rebuilt inside from `graphdef` and the two states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxcook.core import losses as losses_lib
from jaxcook.core.logprobs import target_logprobs
from jaxcook.core.optim import AdamWState, make_optimizer, optimizer_metrics
from jaxcook.engine.sharding import activation_mesh, pin


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps applied
    params: nnx.State  # trainable variables (adapters, or everything)
    opt_state: AdamWState
    grad_accum: nnx.State  # f32, like params
    rng: jax.Array


def init_train_state(params: nnx.State, seed: int = 0) -> TrainState:
    tx = make_optimizer()
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), zeros, jax.random.PRNGKey(seed))


def _builtin_loss(loss_name: str, loss_config: tuple):
    fn = losses_lib.get_loss(loss_name)
    config = dict(loss_config)

    def apply(logp, batch):
        kwargs = dict(config)
        if loss_name in losses_lib.PER_DATUM_LOSSES:
            kwargs.update(datum_ids_BT=batch.datum_ids_BT, datum_valid_D=batch.datum_valid_D)
        return fn(logp, batch.inputs, batch.mask_BT, **kwargs)

    return apply


@dataclass(frozen=True)
class StepFunctions:
    """The jitted steps of one model structure (`graphdef`)."""

    graphdef: nnx.GraphDef
    remat: bool = False
    chunk_tokens: int | None = None  # None: by logit memory (see core.logprobs)
    mesh: Mesh | None = None  # activations are pinned to it while tracing (see engine.sharding)

    def _loss(self, params, frozen, batch, loss_fn: Callable):
        model = nnx.merge(self.graphdef, params, frozen)
        with activation_mesh(self.mesh):
            logp = target_logprobs(model, batch, remat=self.remat, chunk_tokens=self.chunk_tokens)
        loss, metrics = loss_fn(logp, batch)
        return loss, (logp, metrics)

    @partial(jax.jit, static_argnums=(0, 4), donate_argnums=(1,))
    def _forward_backward(self, state: TrainState, frozen, batch, loss_fn):
        grad_fn = jax.grad(self._loss, has_aux=True)
        grads, (logp, metrics) = grad_fn(state.params, frozen, batch, loss_fn)
        accum = pin(jax.tree.map(lambda a, g: a + g.astype(jnp.float32), state.grad_accum, grads), self.mesh)
        return TrainState(state.step, state.params, state.opt_state, accum, state.rng), (logp, metrics)

    @partial(jax.jit, static_argnums=(0, 4))
    def _forward(self, params, frozen, batch, loss_fn):
        _, (logp, metrics) = self._loss(params, frozen, batch, loss_fn)
        return logp, metrics

    def forward_backward(self, state, frozen, batch, loss_name="cross_entropy", loss_config=()):
        return self._forward_backward(state, frozen, batch, _cached_loss(loss_name, tuple(loss_config)))

    def forward(self, params, frozen, batch, loss_name="cross_entropy", loss_config=()):
        return self._forward(params, frozen, batch, _cached_loss(loss_name, tuple(loss_config)))

    def forward_backward_custom(self, state, frozen, batch, fn):
        """`fn(logp_BT, batch) -> (loss, metrics)`: any JAX function of per-token log-probs."""
        return self._forward_backward(state, frozen, batch, fn)

    @partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
    def optim_step(self, state: TrainState, hparams):
        tx = make_optimizer()
        updates, opt_state = tx.update(state.grad_accum, state.opt_state, state.params, hparams=hparams)
        params = pin(optax.apply_updates(state.params, updates), self.mesh)
        opt_state = type(opt_state)(
            opt_state.count, pin(opt_state.mu, self.mesh), pin(opt_state.nu, self.mesh)
        )
        metrics = optimizer_metrics(state.grad_accum, updates, state.params, hparams)
        zeros = pin(jax.tree.map(jnp.zeros_like, state.grad_accum), self.mesh)
        rng = jax.random.fold_in(state.rng, state.step)
        return TrainState(state.step + 1, params, opt_state, zeros, rng), metrics


_LOSS_CACHE: dict[tuple, Callable] = {}


def _cached_loss(name: str, config: tuple) -> Callable:
    """One loss closure per (name, config), so jit's static-argument cache hits."""
    key = (name, config)
    if key not in _LOSS_CACHE:
        _LOSS_CACHE[key] = _builtin_loss(name, config)
    return _LOSS_CACHE[key]
