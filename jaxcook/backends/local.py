"""The local backend: a `ServiceClient` that trains and samples on this process's devices.

It loads models (`jaxcook.models.load`: registry names, HF folders, GGUF), applies the LoRA
config, sizes the trainer's buckets and mesh from the shape hints it was made with, and hands out
`LocalTrainingClient`s (whose `save_weights_and_get_sampling_client` makes `LocalSamplingClient`s).
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp

from jaxcook.distributed_config import DistributedConfig
from jaxcook.engine.buckets import BucketConfig
from jaxcook.engine.distributed import initialize
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.layers import set_matmul_dtype

DTYPES = {"auto": None, "float32": jnp.float32, "bfloat16": jnp.bfloat16}  # auto: bf16 on GPU/TPU


class LocalService:
    """`ServiceClient` on local devices. `max_length` / `batch_size`: the longest datum and the
    largest call the workflow makes (bucket sizes: `BucketConfig.for_shapes`); `mesh`, `pack`
    (several datums per row, kept apart by segment ids: exact, on by default), `share_prefix`
    (datums of a call that start alike hold that start once: exact, on by default), `remat`,
    `param_dtype` (of the base weights) and `seed` (of the train state) apply to every client it
    makes."""

    def __init__(
        self,
        *,
        max_length: int = 4096,
        batch_size: int = 64,
        mesh: MeshConfig = MeshConfig(),
        distributed: DistributedConfig = DistributedConfig(),
        matmul_dtype: Literal["float32", "bfloat16"] = "float32",
        pack: bool = True,
        share_prefix: bool = True,
        remat: bool = False,
        param_dtype: Literal["auto", "float32", "bfloat16"] = "auto",
        seed: int = 0,
    ):
        if not isinstance(pack, bool):
            raise ValueError(f"pack must be true or false, got {pack!r}")
        if param_dtype not in DTYPES:
            raise ValueError(f"unknown param_dtype {param_dtype!r}; valid: {', '.join(DTYPES)}")
        initialize(distributed)  # a no-op for one process
        self.mesh = make_mesh(mesh)
        self.buckets = BucketConfig.for_shapes(max_length, batch_size, devices=self.mesh.size, pack=pack)
        self.pack, self.share_prefix, self.remat, self.seed = pack, share_prefix, remat, seed
        self.param_dtype = DTYPES[param_dtype]
        self.matmul_dtype = matmul_dtype

    def _create(self, base_model: str, lora: LoraConfig | None) -> LocalTrainingClient:
        from jaxcook.models import load

        # straight into the mesh's shardings, tensor by tensor (no device holds the whole model)
        loaded = load(base_model, lora=lora, param_dtype=self.param_dtype, mesh=self.mesh)
        set_matmul_dtype(loaded.model, self.matmul_dtype)
        return LocalTrainingClient(
            loaded.model,
            lora=lora,
            tokenizer=loaded.tokenizer,
            mesh=self.mesh,
            buckets=self.buckets,
            pack=self.pack,
            share_prefix=self.share_prefix,
            remat=self.remat,
            seed=self.seed,
            model_name=base_model,
        )

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        *,
        seed: int = 0,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        alpha: float | None = None,
    ) -> LocalTrainingClient:
        lora = LoraConfig(
            rank=rank,
            alpha=alpha,
            train_attn=train_attn,
            train_mlp=train_mlp,
            train_unembed=train_unembed,
            seed=seed,
        )
        return self._create(base_model, lora)

    def create_full_training_client(self, base_model: str) -> LocalTrainingClient:
        """Every weight trainable (full fine-tuning)."""
        return self._create(base_model, None)

    def _from_state(self, path: str, *, weights_only: bool) -> LocalTrainingClient:
        model_name, lora = saved_model(path)
        client = self._create(model_name, lora)
        client.load_state(path, weights_only=weights_only).result()
        return client

    def create_training_client_from_state(self, path: str) -> LocalTrainingClient:
        """The model and LoRA config a state was saved with, its weights, a fresh optimizer."""
        return self._from_state(path, weights_only=True)

    def create_training_client_from_state_with_optimizer(self, path: str) -> LocalTrainingClient:
        return self._from_state(path, weights_only=False)

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None):
        """A sampling client of saved weights (`model_path`) or of a base model's own weights."""
        from jaxcook.sampling.client import LocalSamplingClient

        if (model_path is None) == (base_model is None):
            raise ValueError("create_sampling_client: give exactly one of model_path and base_model")
        if model_path is not None:
            model_name, lora = saved_model(model_path)
            return LocalSamplingClient.from_checkpoint(model_path, model_name, lora)
        from jaxcook.models import load

        loaded = load(base_model, param_dtype=self.param_dtype)
        set_matmul_dtype(loaded.model, self.matmul_dtype)
        return LocalSamplingClient.from_model(loaded.model, loaded.tokenizer)

    def get_tokenizer(self, base_model: str):
        from jaxcook.models import load_tokenizer

        return load_tokenizer(base_model)


def saved_model(path: str) -> tuple[str, LoraConfig | None]:
    """The model name and LoRA config a state at `path` was saved with (from its meta)."""
    meta = read_meta(path)
    if not meta.get("model_name"):
        raise ValueError(f"{path}: the checkpoint's meta names no model_name; it cannot be opened alone")
    if "lora" in meta:
        lora = None if meta["lora"] is None else LoraConfig(**meta["lora"])
    else:  # saved by a workflow before the meta held it: the run config's model.lora
        saved = (meta.get("config") or {}).get("model", {}).get("lora")
        lora = None if saved is None else LoraConfig(**saved)
    return meta["model_name"], lora


def read_meta(path: str) -> dict:
    """The JSON meta of a checkpoint folder written by `save_state`."""
    from pathlib import Path

    import orbax.checkpoint as ocp

    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        restored = ckptr.restore(Path(path).absolute(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])
