"""The server's one base model, loaded once and shared by every LoRA adapter trained on it.

`SharedBase` holds the base weights on the mesh (one copy, read-only) and builds from them:
- a `LocalTrainingClient` per Tinker training client: its own adapters (initialised from the
  LoRA seed exactly as `jaxcook.models.load` does) and optimizer state, the base's arrays as its
  frozen part (not copied);
- `LocalSamplingClient`s for a weight snapshot or the base alone: the base is laid out for the
  decode loop once and shared by every sampler.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcook import lora as lora_lib
from jaxcook.engine import sharding
from jaxcook.engine.batching import BucketConfig, default_batch_buckets, default_seq_buckets
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.models import Decoder, load
from jaxcook.models.params import _init_adapter, param_paths
from jaxcook.sampling import LocalSamplingClient
from jaxcook.sampling import weights as weights_lib


@dataclass(frozen=True, kw_only=True)
class BaseConfig:
    """What the server serves. `lora_alpha` is fixed per server, as on Tinker (no alpha field in
    the API; Tinker and SkyRL use 32). `max_batch` datums per forward_backward chunk."""

    model: str
    param_dtype: str = "float32"
    lora_alpha: float = 32.0
    max_batch: int = 64
    max_seq_len: int | None = None  # None: the model's context window
    sampler_max_tokens: int = 512  # max_tokens when a sample request leaves it unset
    max_num_samples: int = 512  # per asample request
    max_lora_rank: int = 256


class SharedBase:
    def __init__(self, cfg: BaseConfig):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.param_dtype)
        loaded = load(cfg.model, lora=None, param_dtype=dtype)
        self.name, self.tokenizer, self.config = cfg.model, loaded.tokenizer, loaded.config
        self.param_dtype = dtype
        self.context_window = min(cfg.max_seq_len or 1 << 30, self.config.max_position_embeddings)
        self.mesh = sharding.make_mesh()
        graphdef, state = nnx.split(loaded.model)
        self.base_graphdef = graphdef
        self.frozen = jax.device_put(state, sharding.state_shardings(state, self.mesh))
        self._frozen_pure = nnx.to_pure_dict(self.frozen)
        self.buckets = BucketConfig(
            seq_buckets=default_seq_buckets(self.context_window),
            batch_buckets=default_batch_buckets(cfg.max_batch),
            score_fractions=(),  # Tinker returns the log-prob of every position
        )
        self._lock = threading.Lock()
        self._sampler_part = None  # the base laid out for decoding, built on first use
        self._graphs: dict = {}  # adapter structure -> SamplerGraph (one decode program each)
        self._graphdefs: dict = {}  # adapter structure -> GraphDef

    def lora_config(
        self, *, rank: int, seed: int | None, train_attn=True, train_mlp=True, train_unembed=True
    ):
        return lora_lib.LoraConfig(
            rank=rank,
            alpha=self.cfg.lora_alpha,
            seed=0 if seed is None else seed,
            train_attn=train_attn,
            train_mlp=train_mlp,
            train_unembed=train_unembed,
        )

    def _split(self, lora: lora_lib.LoraConfig):
        """`graphdef, trainable, frozen` of a LoRA model on this base: adapters initialised from
        `lora.seed` as `jaxcook.models.load` does, frozen = the base's arrays (not copies). One
        graphdef object per adapter structure, so every client of that structure hits the same
        compiled steps (jit caches on the graphdef)."""
        abstract = nnx.eval_shape(lambda: Decoder(self.config, lora=lora, param_dtype=self.param_dtype))
        graphdef, trainable, frozen = lora_lib.split(abstract, lora)
        with self._lock:
            graphdef = self._graphdefs.setdefault(_structure(lora), graphdef)
        for path, var in param_paths(trainable):
            var.set_value(_init_adapter(path, tuple(var.get_value().shape), lora.seed))
        nnx.replace_by_pure_dict(frozen, self._frozen_pure)
        return graphdef, trainable, frozen

    def training_client(self, lora: lora_lib.LoraConfig) -> LocalTrainingClient:
        graphdef, trainable, frozen = self._split(lora)
        return LocalTrainingClient.from_split(
            graphdef,
            trainable,
            frozen,
            config=self.config,
            lora=lora,
            tokenizer=self.tokenizer,
            mesh=self.mesh,
            buckets=self.buckets,
            model_name=self.name,
        )

    def _part(self):
        with self._lock:
            if self._sampler_part is None:
                self._sampler_part = weights_lib.part_of(self.frozen, self.config.stacked_layers)
            return self._sampler_part

    def _graph(self, lora, graphdef, params):
        with self._lock:
            key = _structure(lora)
            if key not in self._graphs:
                states = (self.frozen,) if params is None else (params, self.frozen)
                self._graphs[key] = weights_lib.graph_of(graphdef, *states)
            return self._graphs[key]

    def sampler(
        self, lora: lora_lib.LoraConfig | None = None, graphdef=None, params=None
    ) -> LocalSamplingClient:
        """A sampler of the base (no `params`) or of the base + trainable `params` (a snapshot of
        a training client built by `training_client(lora)`, whose `graphdef` it shares)."""
        if params is None:
            lora, graphdef = None, self.base_graphdef
        graph = self._graph(lora, graphdef, params)
        parts = [self._part()]
        if params is not None:
            parts.append(weights_lib.part_of(params, self.config.stacked_layers))
        return LocalSamplingClient(
            graph,
            weights_lib.merge_parts(*parts),
            tokenizer=self.tokenizer,
            context_window=self.context_window,
            default_max_tokens=self.cfg.sampler_max_tokens,
        )

    def trainable_template(self, lora: lora_lib.LoraConfig):
        """(graphdef, trainable params) of `lora` on this base, adapters freshly initialised: the
        shape a saved checkpoint of that config restores into."""
        graphdef, trainable, _ = self._split(lora)
        return graphdef, trainable


def _structure(lora: lora_lib.LoraConfig | None):
    """What shapes a LoRA model's program (everything but the init seed)."""
    return None if lora is None else dataclasses.replace(lora, seed=0)
