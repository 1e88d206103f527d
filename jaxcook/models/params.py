"""The correspondence between jaxcook parameter paths and Hugging Face tensor names.

Our module attributes are named as in HF (`self_attn.q_proj`, `mlp.gate_proj`, ...), so the map
is a rule, not a table: kernels are stored [in, out] (HF [out, in]), norm scales are HF
`weight`s, and layer parameters are stacked along a leading `layers` axis.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder
from jaxcook.models.layers import lora_a_init
from jaxcook.models.safetensors_source import WeightsError

# HF buffers that are not parameters.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_names(path: tuple[str, ...], num_layers: int) -> tuple[list[str], bool]:
    """HF tensor names for one of our parameter paths (one per layer if stacked), and whether
    each HF tensor is transposed relative to ours."""
    *mid, leaf = path
    suffix = "bias" if leaf == "bias" else "weight"
    transpose = leaf == "kernel"
    if mid and mid[0] == "layers":
        inner = ".".join(mid[1:])
        return [f"model.layers.{i}.{inner}.{suffix}" for i in range(num_layers)], transpose
    if tuple(mid) == ("lm_head",):
        return ["lm_head.weight"], transpose
    return [f"model.{'.'.join(mid)}.{suffix}"], transpose


def param_paths(state) -> Iterator[tuple[tuple[str, ...], nnx.Variable]]:
    for path, var in nnx.to_flat_state(state):
        yield tuple(str(p) for p in path), var


def load_state_from_source(cfg: ModelConfig, source, *, lora=None, param_dtype=jnp.float32) -> Decoder:
    """Build a `Decoder` whose base weights come from `source` (names/shape/get in HF names).

    The model is first built abstractly (no memory), then each parameter is read, transposed,
    stacked across layers and cast to `param_dtype` one at a time. Adapters (if `lora`) are
    initialised from `lora.seed`. Errors name the missing, unexpected or misshapen tensor.
    """
    abstract = nnx.eval_shape(lambda: Decoder(cfg, lora=lora, param_dtype=param_dtype))
    graphdef, state = nnx.split(abstract)
    available = {n for n in source.names() if not n.endswith(IGNORED_SUFFIXES)}
    used: set[str] = set()
    for path, var in param_paths(state):
        shape = tuple(var.get_value().shape)
        if isinstance(var, nnx.LoRAParam):
            var.set_value(_init_adapter(path, shape, lora.seed))
            continue
        names, transpose = hf_names(path, cfg.num_layers)
        per_layer = shape[1:] if path[0] == "layers" else shape
        expected = tuple(reversed(per_layer)) if transpose else per_layer
        arrays = []
        for name in names:
            if name not in available:
                raise WeightsError(f"missing tensor {name} (for {'.'.join(path)}) in {_where(source)}")
            got = tuple(source.shape(name))
            if got != expected:
                raise WeightsError(f"tensor {name} has shape {got}, expected {expected} in {_where(source)}")
            w = source.get(name)
            arrays.append(w.T if transpose else w)
            used.add(name)
        value = np.stack(arrays) if path[0] == "layers" else arrays[0]
        var.set_value(jnp.asarray(value, dtype=param_dtype))
    unexpected = available - used
    if cfg.tie_word_embeddings:
        unexpected.discard("lm_head.weight")  # some tied checkpoints still store the shared matrix
    if unexpected:
        raise WeightsError(f"unexpected tensors in {_where(source)}: {sorted(unexpected)[:10]}")
    return nnx.merge(graphdef, state)


def _init_adapter(path: tuple[str, ...], shape, seed: int) -> jax.Array:
    if path[-1] == "lora_b":
        return jnp.zeros(shape, jnp.float32)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(".".join(path).encode()))
    return lora_a_init(key, shape)


def _where(source) -> str:
    return str(getattr(source, "folder", None) or getattr(source, "path", source))


def export_tensors(model: Decoder) -> dict[str, np.ndarray]:
    """HF-named float arrays of the model's base weights (adapters excluded)."""
    cfg = model.config
    out: dict[str, np.ndarray] = {}
    for path, var in param_paths(nnx.state(model, nnx.Param)):
        if isinstance(var, nnx.LoRAParam):
            continue
        names, transpose = hf_names(path, cfg.num_layers)
        value = np.asarray(jax.device_get(var.get_value()))
        slices = list(value) if path[0] == "layers" else [value]
        for name, w in zip(names, slices, strict=True):
            out[name] = np.ascontiguousarray(w.T if transpose else w)
    return out
