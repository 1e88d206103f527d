"""Setup shared by the workflows: model + tokenizer + renderer + training client from a config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax.numpy as jnp

from jaxcook.engine.batching import BucketConfig, default_batch_buckets, default_seq_buckets
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.layers import set_matmul_dtype

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Which model to train and how: LoRA (or full fine-tuning with `lora=None`), dtype, devices."""

    name: str = "smollm2-135m-instruct"
    renderer: str | None = None  # None = the model's recommended renderer
    lora: LoraConfig | None = LoraConfig(rank=32)
    param_dtype: Literal["float32", "bfloat16"] = "float32"  # base weights; adapters and Adam stay f32
    # bfloat16: every projection with bf16 operands and f32 accumulation (AMX via oneMKL on CPU)
    matmul_dtype: Literal["float32", "bfloat16"] = "float32"
    mesh: MeshConfig = MeshConfig()
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

    loaded = load(options.name, lora=options.lora, param_dtype=DTYPES[options.param_dtype])
    set_matmul_dtype(loaded.model, options.matmul_dtype)
    renderer_name = renderer_name_for(options)
    mesh = make_mesh(options.mesh)
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
