"""Setup shared by the workflows: model + tokenizer + renderer + training client from a config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax.numpy as jnp

from jaxcook.engine.batching import BucketConfig, default_batch_buckets, default_seq_buckets
from jaxcook.engine.distributed import DistributedConfig, initialize
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig

DTYPES = {"auto": None, "float32": jnp.float32, "bfloat16": jnp.bfloat16}  # auto: bf16 on GPU/TPU


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Which model to train and how: LoRA (or full fine-tuning with `lora=None`), dtype, devices."""

    name: str = "smollm2-135m-instruct"
    renderer: str | None = None  # None = the model's recommended renderer
    lora: LoraConfig | None = LoraConfig(rank=32)
    # base weights (auto: bf16 on GPU/TPU, f32 on CPU); adapters and Adam stay f32
    param_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    mesh: MeshConfig = MeshConfig()  # data x fsdp x tensor over every device of every process
    distributed: DistributedConfig = DistributedConfig()  # multi-host: coordinator (else JAXCOOK_* env)
    remat: bool = False  # gradient checkpointing of each layer
    pack: bool = False  # pack several sequences per row (segment ids) instead of padding
    load_checkpoint: str | None = None  # start from these weights (a checkpoint folder), fresh optimizer


def renderer_name_for(options: ModelOptions) -> str:
    from jaxcook.models import MODELS
    from jaxcook.renderers.model_info import get_recommended_renderer_name, warn_if_renderer_not_recommended

    if options.renderer is not None:
        warn_if_renderer_not_recommended(options.name, options.renderer)
        return options.renderer
    if options.name in MODELS:
        return MODELS[options.name].renderer
    return get_recommended_renderer_name(options.name)


@dataclass
class Setup:
    client: LocalTrainingClient
    tokenizer: object
    renderer: object
    renderer_name: str


def make_setup(options: ModelOptions, *, max_length: int, batch_size: int, seed: int = 0) -> Setup:
    """Load the model, build the renderer and a training client with buckets for these shapes."""
    from jaxcook.models import load
    from jaxcook.renderers import get_renderer

    initialize(options.distributed)  # a no-op for one process
    mesh = make_mesh(options.mesh)
    # straight into the mesh's shardings, tensor by tensor (no device holds the whole model)
    loaded = load(options.name, lora=options.lora, param_dtype=DTYPES[options.param_dtype], mesh=mesh)
    renderer_name = renderer_name_for(options)
    buckets = BucketConfig(
        seq_buckets=default_seq_buckets(max_length, min_len=min(64, max_length)),
        batch_buckets=_batch_buckets(batch_size, mesh.size),
    )
    client = LocalTrainingClient(
        loaded.model,
        lora=options.lora,
        tokenizer=loaded.tokenizer,
        mesh=mesh,
        buckets=buckets,
        pack=options.pack,
        remat=options.remat,
        seed=seed,
        model_name=options.name,
    )
    if options.load_checkpoint:
        meta = client.load_state(options.load_checkpoint, weights_only=True).result()
        saved = (meta.get("loop") or {}).get("renderer_name") or meta.get("renderer_name")
        if saved and saved != renderer_name:
            raise ValueError(
                f"{options.load_checkpoint} was trained with renderer {saved!r}, "
                f"this run uses {renderer_name!r}; set model.renderer={saved}"
            )
    return Setup(client, loaded.tokenizer, get_renderer(renderer_name, loaded.tokenizer), renderer_name)


def _batch_buckets(batch_size: int, devices: int) -> tuple[int, ...]:
    """Powers of two up to `batch_size`, each a multiple of the device count (rows split evenly)."""
    sizes = {-(-b // devices) * devices for b in default_batch_buckets(batch_size)}
    return tuple(sorted(sizes))
