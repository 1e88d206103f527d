"""Setup shared by the workflows: a backend's training client + tokenizer + renderer from a config.

The backend (`model.backend`, a `BackendConfig`, default `local`) is chosen here and nowhere
else; the workflows then talk to the client through `jaxcook.ports` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxcook.backends import BackendConfig, make_service
from jaxcook.distributed_config import DistributedConfig
from jaxcook.lora import LoraConfig
from jaxcook.mesh_config import MeshConfig
from jaxcook.ports import TrainingClient


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Which model to train and how: LoRA (or full fine-tuning with `lora=None`), dtype, devices."""

    name: str = "smollm2-135m-instruct"
    backend: BackendConfig = BackendConfig()  # `backend=tinker`: jaxcook.backends
    renderer: str | None = None  # None = the model's recommended renderer
    lora: LoraConfig | None = LoraConfig(rank=32)
    # base weights (auto: bf16 on GPU/TPU, f32 on CPU); adapters and Adam stay f32
    param_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # bfloat16: every projection with bf16 operands and f32 accumulation (AMX via oneMKL on CPU)
    matmul_dtype: Literal["float32", "bfloat16"] = "float32"
    mesh: MeshConfig = MeshConfig()  # data x fsdp x expert x tensor over every device of every process
    distributed: DistributedConfig = DistributedConfig()  # multi-host: coordinator (else JAXCOOK_* env)
    remat: bool = False  # gradient checkpointing of each layer
    # several sequences per row (segment ids, positions restarting: exact); false = one per row
    pack: bool = True
    # datums of one call that start alike (RL group, DPO pair) hold that start once (exact)
    share_prefix: bool = True
    load_checkpoint: str | None = None  # start from these weights (a checkpoint folder), fresh optimizer

    def __post_init__(self):
        if isinstance(self.backend, str):  # ModelOptions(backend="local"): the backend's name
            object.__setattr__(self, "backend", BackendConfig(name=self.backend))


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
    """A run's training client, tokenizer and renderer. A context manager: the client is closed
    when the run ends, however it ends (`with make_setup(...) as setup:`)."""

    client: TrainingClient
    tokenizer: object
    renderer: object
    renderer_name: str

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Setup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_setup(options: ModelOptions, *, max_length: int, batch_size: int, seed: int = 0) -> Setup:
    """A training client of `options.backend` (bucketed for these shapes), its tokenizer and renderer."""
    from jaxcook.renderers import get_renderer

    service = make_service(
        options.backend,
        max_length=max_length,
        batch_size=batch_size,
        mesh=options.mesh,
        distributed=options.distributed,
        matmul_dtype=options.matmul_dtype,
        pack=options.pack,
        share_prefix=options.share_prefix,
        remat=options.remat,
        param_dtype=options.param_dtype,
        seed=seed,
    )
    if options.lora is None:
        client = service.create_full_training_client(options.name)
    else:
        lora = options.lora
        client = service.create_lora_training_client(
            options.name,
            lora.rank,
            seed=lora.seed,
            train_mlp=lora.train_mlp,
            train_attn=lora.train_attn,
            train_unembed=lora.train_unembed,
            alpha=lora.alpha,
        )
    try:
        renderer_name = renderer_name_for(options)  # after the load: a missing model is named first
        if options.load_checkpoint:
            meta = client.load_state(options.load_checkpoint, weights_only=True).result() or {}
            saved = (meta.get("loop") or {}).get("renderer_name") or meta.get("renderer_name")
            if saved and saved != renderer_name:
                raise ValueError(
                    f"{options.load_checkpoint} was trained with renderer {saved!r}, "
                    f"this run uses {renderer_name!r}; set model.renderer={saved}"
                )
        tokenizer = client.get_tokenizer()
        return Setup(client, tokenizer, get_renderer(renderer_name, tokenizer), renderer_name)
    except BaseException:  # a bad renderer or checkpoint: no client is left open
        client.close()
        raise
