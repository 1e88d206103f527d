"""The local `TrainingClient`: Tinker's training calls, run by the pure train step on local devices.

It implements `jaxcook.ports.TrainingClient`; `jaxcook.backends.local` builds it. Every call
returns a `concurrent.futures.Future` at once and runs on one worker thread in submission
order, so `forward_backward` then `optim_step` can be submitted back to back ("same clock
cycle" pipelining). Batching (host work) happens on the caller's thread at
submission, while the worker dispatches the previous call to the device: the host prepares the
next batch while the device computes.

The local fast paths live here, behind the port: a list that does not fit one batch is split
into several device calls (`batching.call_parts`); a built-in loss unembeds only the positions
it reads; datums of one call that start alike (an RL group's prompt, a DPO pair's) hold that
start once (`share_prefix`, see `engine.shared_prefix`); the sampling clients it makes score
prompts (`compute_logprobs`) with the trainer's own forward.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxcook import lora as lora_lib
from jaxcook.core import losses as losses_lib
from jaxcook.core.optim import adam_hparams
from jaxcook.core.topk import chunked_topk_logprobs
from jaxcook.engine import checkpoint as ckpt
from jaxcook.engine import distributed, sharding
from jaxcook.engine.batching import BucketConfig, call_parts, unbatch
from jaxcook.engine.process_batch import make_process_batch
from jaxcook.engine.train_step import StepFunctions, TrainState, init_train_state
from jaxcook.ports import ModelInfo, SavedPath
from jaxcook.types import AdamParams, Datum, ForwardBackwardOutput, ModelInput

CE_CONFIG = tuple(sorted(losses_lib.check_loss_config("cross_entropy", None).items()))


@partial(jax.jit, static_argnums=(0, 4))
def _topk(graphdef, params, frozen, batch, k: int):
    model = nnx.merge(graphdef, params, frozen)
    hidden_BTD = model(batch.tokens_BT, batch.positions_BT, batch.segment_ids_BT)
    return chunked_topk_logprobs(model.unembed, hidden_BTD, k)


def _merge_outputs(outputs: list[ForwardBackwardOutput], sizes: list[int]) -> ForwardBackwardOutput:
    """One output of a call split into several: per-datum outputs concatenated; `*:sum` metrics
    summed, the others (means) averaged weighted by each part's datum count."""
    if len(outputs) == 1:
        return outputs[0]
    per_datum = [o for out in outputs for o in out.loss_fn_outputs]
    metrics = {}
    for key in outputs[0].metrics:
        values = [out.metrics[key] for out in outputs]
        if key.endswith(":sum"):
            metrics[key] = float(sum(values))
        else:
            metrics[key] = float(sum(v * n for v, n in zip(values, sizes)) / sum(sizes))
    return ForwardBackwardOutput(per_datum, metrics)


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
        share_prefix: bool = True,
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
            share_prefix=share_prefix,
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
        share_prefix: bool = True,
        remat: bool = False,
        seed: int = 0,
        model_name: str = "",
    ) -> None:
        self.lora, self.tokenizer, self.model_name = lora, tokenizer, model_name
        self.config = config
        self.mesh = mesh or sharding.make_mesh()
        sharding.check_model(self.config, self.mesh)
        self.buckets, self.pack = buckets, pack
        # Exact only where a datum's tokens do not interact: a MoE router's load-balancing loss
        # (and capacity) counts every token, so a prefix held once would change it.
        self.share_prefix = share_prefix and getattr(config, "moe", None) is None
        self.graphdef = graphdef
        self.frozen = jax.device_put(frozen, sharding.state_shardings(frozen, self.mesh))
        self._state: TrainState = place_state(init_train_state(trainable, seed), self.mesh)
        self.steps = StepFunctions(graphdef, remat=remat, mesh=self.mesh)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxcook-train")
        self._lock = threading.Lock()  # serialises submissions so queue order = call order

    @classmethod
    def create(
        cls,
        model_name: str,
        *,
        lora: lora_lib.LoraConfig | None = lora_lib.LoraConfig(),
        param_dtype=None,
        **kwargs,
    ) -> LocalTrainingClient:
        """`param_dtype=None`: bf16 on GPU/TPU, f32 on CPU; with `mesh=`, loaded straight into it."""
        from jaxcook.models import load

        loaded = load(model_name, lora=lora, param_dtype=param_dtype, mesh=kwargs.get("mesh"))
        return cls(loaded.model, lora=lora, tokenizer=loaded.tokenizer, model_name=model_name, **kwargs)

    # -- batching -------------------------------------------------------------------------------

    def _batch(self, data: list[Datum], loss_fn: str | None = None, *, pack: bool | None = None):
        """Device `Batch` and `Layout` (`pack`: None = the client's); with a built-in `loss_fn`,
        only the positions it reads get log-probs (`losses.positions_read`; 0 elsewhere)."""
        if not data:
            raise ValueError("empty list of datums")
        scored = (
            None if loss_fn is None else [losses_lib.positions_read(loss_fn, d.loss_fn_inputs) for d in data]
        )
        # each process builds and transfers only the rows its own devices hold (one process: all)
        batch, layout, _ = make_process_batch(
            data,
            self.mesh,
            pack=self.pack if pack is None else pack,
            seq_buckets=self.buckets.seq_buckets,
            batch_buckets=self.buckets.batch_buckets,
            scored=scored,
            score_fractions=self.buckets.score_fractions,
            share_prefix=self.share_prefix,
        )
        return batch, layout

    def _parts(self, data: list[Datum]) -> list[list[Datum]]:
        """`data` in consecutive parts that each fit one batch (`batching.call_parts`)."""
        return [data[s] for s in call_parts([d.length for d in data], self.pack, self.buckets)]

    def _submit(self, fn, *args) -> Future:
        with self._lock:
            return self._executor.submit(fn, *args)

    @staticmethod
    def _outputs(layout, logp, metrics) -> ForwardBackwardOutput:
        logp, metrics = distributed.to_host((logp, metrics))
        per_datum = [{"logprobs": np.asarray(x, np.float32)} for x in unbatch(layout, logp)]
        return ForwardBackwardOutput(per_datum, {k: float(v) for k, v in metrics.items()})

    # -- the TrainingClient port ---------------------------------------------------------------------

    def forward_backward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future:
        config = tuple(sorted(losses_lib.check_loss_config(loss_fn, loss_fn_config).items()))
        losses_lib.check_loss_inputs(loss_fn, data[0].loss_fn_inputs.keys() if data else ())
        parts = [(part, *self._batch(part, loss_fn)) for part in self._parts(data)]

        def run():
            outputs = []
            for _, batch, layout in parts:
                self._state, (logp, metrics) = self.steps.forward_backward(
                    self._state, self.frozen, batch, loss_fn, config
                )
                outputs.append(self._outputs(layout, logp, metrics))
            return _merge_outputs(outputs, [len(p) for p, _, _ in parts])

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
        parts = [(part, *self._batch(part, loss_fn)) for part in self._parts(data)]

        def run():
            weights = self._state.params if params is None else params
            outputs = []
            for _, batch, layout in parts:
                logp, metrics = self.steps.forward(weights, self.frozen, batch, loss_fn, config)
                outputs.append(self._outputs(layout, logp, metrics))
            return _merge_outputs(outputs, [len(p) for p, _, _ in parts])

        return self._submit(run)

    def forward_backward_custom(self, data: list[Datum], fn) -> Future:
        """`fn(logp_BT, batch) -> (loss, metrics)`, a JAX function; jitted once per `fn` object.
        Always the padded layout (row i = datum i): `fn` may reduce over rows, so packing is off."""
        batch, layout = self._batch(data, pack=False)

        def run():
            self._state, (logp, metrics) = self.steps.forward_backward_custom(
                self._state, self.frozen, batch, fn
            )
            return self._outputs(layout, logp, metrics)

        return self._submit(run)

    def forward_topk(self, data: list[Datum], k: int) -> Future:
        """Per datum `(ids_TK, logp_TK)`: the `k` most likely next tokens at each input position
        (aligned with `target_tokens`) under the current weights, and their log-probabilities."""
        if k < 1:
            raise ValueError(f"forward_topk: k must be >= 1, got {k}")
        probes = [Datum(d.model_input, {"target_tokens": np.zeros(d.length, np.int32)}) for d in data]
        parts = [self._batch(part) for part in self._parts(probes)]

        def run():
            out = []
            for batch, layout in parts:
                ids_BTK, lp_BTK = distributed.to_host(
                    _topk(self.graphdef, self._state.params, self.frozen, batch, k)
                )
                out += list(zip(unbatch(layout, ids_BTK), unbatch(layout, lp_BTK)))
            return out

        return self._submit(run)

    def optim_step(self, adam: AdamParams) -> Future:
        hparams = adam_hparams(adam)

        def run():
            self._state, metrics = self.steps.optim_step(self._state, hparams)
            return {k: float(v) for k, v in distributed.to_host(metrics).items()}

        return self._submit(run)

    def get_tokenizer(self):
        return self.tokenizer

    def get_info(self) -> ModelInfo:
        return ModelInfo(
            model_name=self.model_name,
            is_lora=self.lora is not None,
            lora_rank=None if self.lora is None else self.lora.rank,
            context_window=int(self.config.max_position_embeddings),
        )

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

    def _meta(self, user_metadata: dict | None) -> dict[str, Any]:
        lora = None if self.lora is None else asdict(self.lora)
        return {"model_name": self.model_name, "lora": lora, **(user_metadata or {})}

    def save_state(
        self,
        name: str | Path,
        *,
        with_optimizer: bool = True,
        user_metadata: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Future:
        """Write the state after every call submitted so far to the folder `name`; resolves to
        its `SavedPath`. `user_metadata` (JSON; `meta` is its old name) is saved beside it."""
        meta = self._meta({**(meta or {}), **(user_metadata or {})})

        def run():
            return SavedPath(str(ckpt.save(name, self._state, meta, with_optimizer=with_optimizer)))

        return self._submit(run)

    def save_weights_for_sampler(self, name: str | Path, *, user_metadata: dict | None = None) -> Future:
        """The weights alone (no optimizer), for `LocalService.create_sampling_client`."""
        return self.save_state(name, with_optimizer=False, user_metadata=user_metadata)

    def load_state(self, path: str | Path, *, weights_only: bool = False) -> Future:
        """Load weights (and the optimizer state, step and RNG if the checkpoint has them, unless
        `weights_only`); returns the checkpoint's meta."""

        def run():
            self._state, meta = ckpt.restore(path, self._state, weights_only=weights_only)
            return meta

        return self._submit(run)

    def load_state_with_optimizer(self, path: str | Path) -> Future:
        return self.load_state(path)

    def save_weights_and_get_sampling_client(self, name: str | None = None, **kwargs):
        """A `LocalSamplingClient` of the weights after every call submitted so far (`name`: also
        saved there). Its `compute_logprobs` runs this client's forward on those weights (the
        trainer's numerics, buckets and scored positions), not the sampler's prefill."""
        from jaxcook.sampling.client import LocalSamplingClient

        if name is not None:
            self.save_weights_for_sampler(name).result()
        sc = LocalSamplingClient.from_training_client(self, keep_params=True, **kwargs)
        params = sc.snapshot_params
        sc.scorer = lambda prompts, last_n: self.score_prompts(params, prompts, last_n)
        return sc

    def score_prompts(
        self, params, prompts: list[tuple[int, ...]], last_n: list[int | None]
    ) -> list[list[float | None]]:
        """log p(token i | tokens < i) of each prompt under trainable `params` (entry 0 None, and
        every entry before the last `last_n[i]` None: those positions are not unembedded). Runs
        on the caller's thread (it reads no mutable client state)."""
        keep = [i for i, p in enumerate(prompts) if len(p) > 1]
        data = []
        for i in keep:
            seq = np.asarray(prompts[i], np.int32)
            weights = np.ones(len(seq) - 1, np.float32)
            if last_n[i] is not None:
                weights[: max(0, len(weights) - last_n[i])] = 0.0
            data.append(
                Datum(ModelInput.from_ints(seq[:-1].tolist()), {"target_tokens": seq[1:], "weights": weights})
            )
        out: list[list[float | None]] = [[None] for _ in prompts]
        if not data:
            return out
        done = 0
        for part in self._parts(data):
            batch, layout = self._batch(part, "cross_entropy")
            logp, _ = self.steps.forward(params, self.frozen, batch, "cross_entropy", CE_CONFIG)
            for d, lp in zip(part, unbatch(layout, distributed.to_host(logp)), strict=True):
                w = d.loss_fn_inputs["weights"]
                out[keep[done]] = [None] + [float(x) if w[t] else None for t, x in enumerate(lp)]
                done += 1
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True)
