"""The local `TrainingClient`: Tinker's training calls, run by the pure train step on local devices.

Every call returns a `concurrent.futures.Future` at once and runs on one worker thread in
submission order, so `forward_backward` then `optim_step` can be submitted back to back
("same clock cycle" pipelining). Batching (host work) happens on the caller's thread at
submission, while the worker dispatches the previous call to the device: the host prepares the
next batch while the device computes.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxcook import lora as lora_lib
from jaxcook.core import losses as losses_lib
from jaxcook.core.optim import adam_hparams
from jaxcook.engine import checkpoint as ckpt
from jaxcook.engine import sharding
from jaxcook.engine.batching import BucketConfig, make_batch, unbatch
from jaxcook.engine.train_step import StepFunctions, TrainState, init_train_state
from jaxcook.types import AdamParams, Datum, ForwardBackwardOutput


def place_state(state: TrainState, mesh: Mesh) -> TrainState:
    """Every leaf on the mesh: params-like trees by their logical axes, scalars replicated, so
    the jitted steps see the same input shardings on every call (no recompiles)."""
    like_params = sharding.state_shardings(state.params, mesh)
    rep = sharding.replicated(mesh)
    shardings = TrainState(
        rep, like_params, type(state.opt_state)(rep, like_params, like_params), like_params, rep
    )
    return jax.device_put(state, shardings)


class LocalTrainingClient:
    """Train one model (LoRA adapters, or every weight) on this process's devices."""

    def __init__(
        self,
        model,
        *,
        lora: lora_lib.LoraConfig | None,
        tokenizer=None,
        mesh: Mesh | None = None,
        buckets: BucketConfig = BucketConfig(),
        pack: bool = False,
        remat: bool = False,
        seed: int = 0,
        model_name: str = "",
    ):
        self._setup(
            *lora_lib.split(model, lora),
            config=model.config,
            lora=lora,
            tokenizer=tokenizer,
            mesh=mesh,
            buckets=buckets,
            pack=pack,
            remat=remat,
            seed=seed,
            model_name=model_name,
        )

    @classmethod
    def from_split(cls, graphdef, trainable, frozen, *, config, lora, **kwargs) -> LocalTrainingClient:
        """From an already split model (`lora.split`); `frozen` arrays already placed on the mesh
        are used as they are, so several clients (e.g. LoRA adapters of one server) share one base
        in memory. `kwargs` are the constructor's (tokenizer, mesh, buckets, ...)."""
        self = cls.__new__(cls)
        self._setup(graphdef, trainable, frozen, config=config, lora=lora, **kwargs)
        return self

    def _setup(
        self,
        graphdef,
        trainable,
        frozen,
        *,
        config,
        lora: lora_lib.LoraConfig | None,
        tokenizer=None,
        mesh: Mesh | None = None,
        buckets: BucketConfig = BucketConfig(),
        pack: bool = False,
        remat: bool = False,
        seed: int = 0,
        model_name: str = "",
    ) -> None:
        self.lora, self.tokenizer, self.model_name = lora, tokenizer, model_name
        self.config = config
        self.mesh = mesh or sharding.make_mesh()
        self.buckets, self.pack = buckets, pack
        self.graphdef = graphdef
        self.frozen = jax.device_put(frozen, sharding.state_shardings(frozen, self.mesh))
        self._state: TrainState = place_state(init_train_state(trainable, seed), self.mesh)
        self.steps = StepFunctions(graphdef, remat=remat)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxcook-train")
        self._lock = threading.Lock()  # serialises submissions so queue order = call order

    @classmethod
    def create(
        cls,
        model_name: str,
        *,
        lora: lora_lib.LoraConfig | None = lora_lib.LoraConfig(),
        param_dtype=jnp.float32,
        **kwargs,
    ) -> LocalTrainingClient:
        from jaxcook.models import load

        loaded = load(model_name, lora=lora, param_dtype=param_dtype)
        return cls(loaded.model, lora=lora, tokenizer=loaded.tokenizer, model_name=model_name, **kwargs)

    # -- batching -------------------------------------------------------------------------------

    def _batch(self, data: list[Datum], loss_fn: str | None = None):
        """Device `Batch` and `Layout`; with a built-in `loss_fn`, only the positions it reads get
        log-probs (`losses.positions_read`; the outputs hold 0 elsewhere)."""
        if not data:
            raise ValueError("empty list of datums")
        scored = (
            None if loss_fn is None else [losses_lib.positions_read(loss_fn, d.loss_fn_inputs) for d in data]
        )
        batch, layout = make_batch(
            data,
            pack=self.pack,
            seq_buckets=self.buckets.seq_buckets,
            batch_buckets=self.buckets.batch_buckets,
            scored=scored,
            score_fractions=self.buckets.score_fractions,
        )
        shards = sharding.num_batch_shards(self.mesh)
        if batch.tokens_BT.shape[0] % shards:
            raise ValueError(
                f"batch bucket {batch.tokens_BT.shape[0]} does not split over {shards} devices; "
                "use batch buckets that are multiples of the device count"
            )
        B = batch.tokens_BT.shape[0]
        row, rep = sharding.batch_sharding(self.mesh), sharding.replicated(self.mesh)
        batch = jax.tree.map(lambda x: jax.device_put(x, row if x.ndim and x.shape[0] == B else rep), batch)
        return batch, layout

    def _submit(self, fn, *args) -> Future:
        with self._lock:
            return self._executor.submit(fn, *args)

    @staticmethod
    def _outputs(layout, logp, metrics) -> ForwardBackwardOutput:
        logp, metrics = jax.device_get((logp, metrics))
        per_datum = [{"logprobs": np.asarray(x, np.float32)} for x in unbatch(layout, logp)]
        return ForwardBackwardOutput(per_datum, {k: float(v) for k, v in metrics.items()})

    # -- the TrainingClient port ---------------------------------------------------------------------

    def forward_backward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future:
        config = tuple(sorted(losses_lib.check_loss_config(loss_fn, loss_fn_config).items()))
        losses_lib.check_loss_inputs(loss_fn, data[0].loss_fn_inputs.keys() if data else ())
        batch, layout = self._batch(data, loss_fn)

        def run():
            self._state, (logp, metrics) = self.steps.forward_backward(
                self._state, self.frozen, batch, loss_fn, config
            )
            return self._outputs(layout, logp, metrics)

        return self._submit(run)

    def forward(
        self,
        data: list[Datum],
        loss_fn: str = "cross_entropy",
        loss_fn_config: dict | None = None,
        *,
        params=None,
    ) -> Future:
        """Log-probs and loss metrics without a gradient; `params` (a trainable-shaped state, e.g.
        `reference_params()`) replaces the current trainable weights for this call."""
        config = tuple(sorted(losses_lib.check_loss_config(loss_fn, loss_fn_config).items()))
        losses_lib.check_loss_inputs(loss_fn, data[0].loss_fn_inputs.keys() if data else ())
        batch, layout = self._batch(data, loss_fn)

        def run():
            weights = self._state.params if params is None else params
            logp, metrics = self.steps.forward(weights, self.frozen, batch, loss_fn, config)
            return self._outputs(layout, logp, metrics)

        return self._submit(run)

    def forward_backward_custom(self, data: list[Datum], fn) -> Future:
        """`fn(logp_BT, batch) -> (loss, metrics)`, a JAX function; jitted once per `fn` object."""
        batch, layout = self._batch(data)

        def run():
            self._state, (logp, metrics) = self.steps.forward_backward_custom(
                self._state, self.frozen, batch, fn
            )
            return self._outputs(layout, logp, metrics)

        return self._submit(run)

    def optim_step(self, adam: AdamParams) -> Future:
        hparams = adam_hparams(adam)

        def run():
            self._state, metrics = self.steps.optim_step(self._state, hparams)
            return {k: float(v) for k, v in jax.device_get(metrics).items()}

        return self._submit(run)

    def get_tokenizer(self):
        return self.tokenizer

    # -- state ------------------------------------------------------------------------------------

    def current_state(self, *, copy: bool = False) -> Future:
        """The train state after every call submitted so far. With `copy`, a copy that later
        (donating) steps cannot invalidate, e.g. for an asynchronous checkpoint."""
        return self._submit(lambda: jax.tree.map(jnp.copy, self._state) if copy else self._state)

    def snapshot_params(self) -> Future:
        """A copy of the trainable params that later (donating) steps cannot invalidate."""
        return self._submit(lambda: jax.tree.map(jnp.copy, self._state.params))

    def reference_params(self) -> Future:
        """The reference policy for KL penalties and DPO without a second copy of the base: with
        LoRA, the current adapters with every `lora_b` zeroed (adapters off = the base model);
        without LoRA, a copy of the current weights (call it before training starts)."""

        def run():
            if self.lora is None:
                return jax.tree.map(jnp.copy, self._state.params)
            return jax.tree_util.tree_map_with_path(
                lambda path, x: jnp.zeros_like(x) if "lora_b" in jax.tree_util.keystr(path) else jnp.copy(x),
                self._state.params,
            )

        return self._submit(run)

    def set_state(self, state: TrainState) -> Future:
        def run():
            self._state = state

        return self._submit(run)

    def save_state(
        self, path: str | Path, *, with_optimizer: bool = True, meta: dict[str, Any] | None = None
    ) -> Future:
        meta = {"model_name": self.model_name, **(meta or {})}
        return self._submit(lambda: ckpt.save(path, self._state, meta, with_optimizer=with_optimizer))

    def load_state(self, path: str | Path, *, weights_only: bool = False) -> Future:
        """Load weights (and the optimizer state, step and RNG if the checkpoint has them, unless
        `weights_only`); returns the checkpoint's meta."""

        def run():
            self._state, meta = ckpt.restore(path, self._state, weights_only=weights_only)
            return meta

        return self._submit(run)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
