"""A trained model for inference: a run dir, a checkpoint folder or a model name -> weights + renderer.

    trained = load_trained("runs/sft")                 # the run's newest checkpoint
    trained = load_trained("runs/sft/checkpoints/40")  # one checkpoint
    trained = load_trained("smollm2-135m-instruct")    # an untrained model (what `models.load` takes)
    trained = load_trained("s3://bucket/runs/sft")     # a remote run or checkpoint: fetched first
    trained.model, trained.tokenizer, trained.renderer_name, trained.lora

A checkpoint's meta holds the run config (`config.model`: model name, LoRA config, dtype) and
the renderer name, so nothing else is needed: the base model is loaded with `models.load` and
the checkpoint's trainable params are restored onto it with `engine.checkpoint.restore`, then
merged back into one `Decoder` (adapters kept as adapters; `models.export` folds them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TrainedModelError(ValueError):
    pass


@dataclass
class TrainedModel:
    model: Any  # jaxcook.models.Decoder with the trained weights
    tokenizer: Any
    renderer_name: str
    model_name: str  # the base model (registry name, folder or hub id)
    lora: Any  # jaxcook.lora.LoraConfig | None
    checkpoint: Path | None  # None for an untrained model
    step: int | None

    def renderer(self):
        from jaxcook.renderers import get_renderer

        return get_renderer(self.renderer_name, self.tokenizer)

    def sampling_client(self, **kwargs):
        """A `LocalSamplingClient` on these weights (kwargs: seed, default_max_tokens, ...)."""
        from jaxcook.sampling import LocalSamplingClient

        return LocalSamplingClient.from_model(self.model, self.tokenizer, **kwargs)


def is_checkpoint(path: Path) -> bool:
    return (path / "state").is_dir() and (path / "meta").is_dir()


def is_run_dir(path: Path) -> bool:
    """A training run's log dir: it has checkpoints/ or a metrics log."""
    return (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file()


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Finished checkpoint steps of a run dir (Orbax renames a step folder when it is complete)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and is_checkpoint(p))


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder `path` names: itself, or the newest one of a run dir; for a URL
    (`s3://...`) a local copy of the committed checkpoint it names (`remote_checkpoints`)."""
    from jaxcook.storage import is_remote

    if is_remote(path):
        from jaxcook.remote_checkpoints import RemoteCheckpointError, fetch_checkpoint

        try:
            return fetch_checkpoint(str(path))
        except (RemoteCheckpointError, OSError) as e:
            raise TrainedModelError(str(e)) from e
    path = Path(path).expanduser()
    if not path.exists():
        raise TrainedModelError(f"{path}: no such run dir or checkpoint folder")
    if is_checkpoint(path):
        return path
    if is_run_dir(path):
        steps = checkpoint_steps(path)
        if not steps:
            raise TrainedModelError(f"{path}: a run dir with no finished checkpoint in {path}/checkpoints")
        return path / "checkpoints" / str(steps[-1])
    raise TrainedModelError(
        f"{path}: not a run dir (no checkpoints/) nor a checkpoint folder (no state/ and meta/)"
    )


def read_meta(checkpoint: Path) -> dict:
    """The JSON meta of a checkpoint (loop state, run config, renderer name), without its arrays."""
    import orbax.checkpoint as ocp

    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        restored = ckptr.restore(checkpoint.absolute(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])


def _model_options(meta: dict, checkpoint: Path):
    """The run's `ModelOptions` from the checkpoint meta (a run's config, or `save_state`'s model name)."""
    from jaxcook.config import config_from_dict
    from jaxcook.workflows.common import ModelOptions

    config = meta.get("config") or {}
    if isinstance(config.get("model"), dict):
        try:
            return config_from_dict(ModelOptions, config["model"])
        except Exception as e:  # noqa: BLE001 - named in a one-line error
            raise TrainedModelError(f"{checkpoint}/meta: config.model is not a ModelOptions ({e})") from e
    raise TrainedModelError(
        f"{checkpoint}/meta: no run config (config.model) to say which base model and LoRA config "
        "the weights belong to; load it with LocalSamplingClient.from_checkpoint(path, model, lora)"
    )


def load_trained(path_or_model: str | Path, *, renderer: str | None = None) -> TrainedModel:
    """Model with trained weights, tokenizer and renderer name from a run dir, a checkpoint folder,
    or (no checkpoint) any model name or folder `models.load` takes. `renderer` overrides the saved one."""
    from flax import nnx

    from jaxcook import lora as lora_lib
    from jaxcook.backends.local import DTYPES
    from jaxcook.engine import checkpoint as ckpt
    from jaxcook.engine.train_step import init_train_state
    from jaxcook.models import MODELS, ConfigError, WeightsError, load
    from jaxcook.storage import is_remote
    from jaxcook.workflows.common import ModelOptions, renderer_name_for

    path = (
        find_checkpoint(path_or_model) if is_remote(path_or_model) else Path(str(path_or_model)).expanduser()
    )
    looks_like_run = path.is_dir() and (is_checkpoint(path) or is_run_dir(path))
    if not looks_like_run:
        if str(path_or_model) not in MODELS and not path.exists():
            raise TrainedModelError(
                f"{path_or_model}: not a run dir, a checkpoint folder, a model folder or a registry "
                f"model ({', '.join(sorted(MODELS))})"
            )
        try:
            loaded = load(str(path_or_model))
        except (WeightsError, ConfigError) as e:
            raise TrainedModelError(f"{path_or_model}: not a run dir or a checkpoint folder, and {e}") from e
        name = renderer or _renderer_for(ModelOptions(name=str(path_or_model), lora=None), renderer_name_for)
        return TrainedModel(loaded.model, loaded.tokenizer, name, str(path_or_model), None, None, None)

    checkpoint = find_checkpoint(path)
    meta = read_meta(checkpoint)
    options = _model_options(meta, checkpoint)
    loaded = load(options.name, lora=options.lora, param_dtype=DTYPES[options.param_dtype])
    graphdef, trainable, frozen = lora_lib.split(loaded.model, options.lora)
    state, _ = ckpt.restore(checkpoint, init_train_state(trainable), weights_only=True)
    model = nnx.merge(graphdef, state.params, frozen)
    saved = (meta.get("loop") or {}).get("renderer_name") or meta.get("renderer_name")
    name = renderer or saved or _renderer_for(options, renderer_name_for)
    step = (meta.get("loop") or {}).get("step")
    return TrainedModel(model, loaded.tokenizer, name, options.name, options.lora, checkpoint, step)


def _renderer_for(options, renderer_name_for) -> str:
    try:
        return renderer_name_for(options)
    except Exception as e:  # noqa: BLE001 - an unknown model has no recommended renderer
        message = f"{options.name}: no known renderer for this model; pass --renderer NAME"
        raise TrainedModelError(message) from e
