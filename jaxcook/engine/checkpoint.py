"""Checkpoints with Orbax: train state (+ optimizer) and JSON loop state, periodic, keep-N, final.

Layout: `<dir>/<step>/{state, meta}` written by an async `ocp.CheckpointManager`. `state`
holds the trainable params, and (unless weights-only) the optimizer state, step and RNG, as
plain dicts; `meta` holds the loop state (epoch, batch, ...), the run config and the renderer
name. Orbax writes each step to a temporary folder and renames it when complete, so a run
killed mid-save leaves no half checkpoint behind; a checkpoint that fails to restore (a
corrupt file) is skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from jaxcook.engine.train_step import TrainState

log = logging.getLogger(__name__)


def state_to_tree(state: TrainState, *, with_optimizer: bool) -> dict:
    tree = {"params": nnx.to_pure_dict(state.params)}
    if with_optimizer:
        tree["opt_state"] = {
            "count": state.opt_state.count,
            "mu": nnx.to_pure_dict(state.opt_state.mu),
            "nu": nnx.to_pure_dict(state.opt_state.nu),
        }
        tree["step"] = state.step
        tree["rng"] = (
            jax.random.key_data(state.rng)
            if jnp.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
            else state.rng
        )
    return tree


def tree_into_state(tree: dict, template: TrainState) -> TrainState:
    """Put restored arrays into a state shaped like `template` (sharding from the template)."""

    def place(value, like):
        return jax.device_put(jnp.asarray(value, like.dtype), like.sharding)

    copy = lambda tree: jax.tree.map(lambda x: x, tree)  # fresh containers; the template stays intact
    params = copy(template.params)
    nnx.replace_by_pure_dict(params, jax.tree.map(place, tree["params"], nnx.to_pure_dict(params)))
    if "opt_state" not in tree:
        zero_grads = jax.tree.map(jnp.zeros_like, template.grad_accum)
        return TrainState(template.step, params, template.opt_state, zero_grads, template.rng)
    opt = template.opt_state
    mu, nu = copy(opt.mu), copy(opt.nu)
    nnx.replace_by_pure_dict(mu, jax.tree.map(place, tree["opt_state"]["mu"], nnx.to_pure_dict(mu)))
    nnx.replace_by_pure_dict(nu, jax.tree.map(place, tree["opt_state"]["nu"], nnx.to_pure_dict(nu)))
    opt = type(opt)(count=jnp.asarray(tree["opt_state"]["count"], jnp.int32), mu=mu, nu=nu)
    zero_grads = jax.tree.map(jnp.zeros_like, template.grad_accum)
    return TrainState(
        jnp.asarray(tree["step"], jnp.int32),
        params,
        opt,
        zero_grads,
        jnp.asarray(tree["rng"], template.rng.dtype),
    )


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    """Periodic / final checkpoints of one run directory, keeping the last `keep` steps."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(
        self,
        step: int,
        state: TrainState,
        meta: dict[str, Any],
        *,
        with_optimizer: bool = True,
        force: bool = False,
    ) -> None:
        tree = state_to_tree(state, with_optimizer=with_optimizer)
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def path(self, step: int) -> Path:
        return self.directory / str(step)

    def restore_latest(self, template: TrainState) -> tuple[int, TrainState, dict] | None:
        """(step, state, meta) of the newest readable checkpoint, or None if there is none."""
        self.wait()
        for step in reversed(self.steps()):
            try:
                return (step, *restore(self.path(step), template))
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                log.warning(
                    "checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                    self.path(step),
                    type(e).__name__,
                    e,
                )
        if self.steps():
            raise CheckpointError(f"no readable checkpoint in {self.directory} (tried {self.steps()})")
        return None

    def close(self) -> None:
        self.wait()
        self.manager.close()


def restore(path: str | Path, template: TrainState, *, weights_only: bool = False) -> tuple[TrainState, dict]:
    """Restore one checkpoint folder (`<dir>/<step>`) into a state shaped like `template`;
    `weights_only` keeps the template's optimizer state, step and RNG."""
    path = Path(path).absolute()
    meta = ocp.args.JsonRestore()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        restored = ckptr.restore(path, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=meta))
    tree = dict(restored["state"])
    if weights_only:
        tree = {"params": tree["params"]}
    return tree_into_state(tree, template), dict(restored["meta"])


def save(path: str | Path, state: TrainState, meta: dict[str, Any], *, with_optimizer: bool = True) -> Path:
    """Write one checkpoint folder synchronously (the client's `save_state`)."""
    path = Path(path).absolute()
    tree = state_to_tree(state, with_optimizer=with_optimizer)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            path,
            args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
    return path
