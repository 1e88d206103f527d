"""The correspondence between jaxcook parameter paths and Hugging Face tensor names.

Our module attributes are named as in HF (`self_attn.q_proj`, `mlp.gate_proj`, ...), so the map
is a rule, not a table: kernels are stored [in, out] (HF [out, in]), norm scales are HF
`weight`s, and layer parameters are stacked along a leading `layers` axis.
"""

from __future__ import annotations

import gc
import sys
import time
import zlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder
from jaxcook.models.layers import Buffer, lora_a_init
from jaxcook.models.safetensors_source import WeightsError

# HF buffers that are not parameters.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_names(path: tuple[str, ...], cfg: ModelConfig) -> tuple[list[str], bool]:
    """HF tensor names for one of our parameter paths (one per layer if stacked), and whether
    each HF tensor is transposed relative to ours. The stack holds the layers after the dense
    prefix (`dense_layers.{i}`, HF layer i) when the config has one."""
    *mid, leaf = path
    suffix = "bias" if leaf == "bias" else "weight"
    transpose = leaf == "kernel"
    if mid and mid[0] == "layers":
        inner = ".".join(mid[1:])
        layers = range(cfg.first_dense_layers, cfg.num_layers)
        return [f"model.layers.{i}.{inner}.{suffix}" for i in layers], transpose
    if mid and mid[0] == "dense_layers":
        return [f"model.layers.{mid[1]}.{'.'.join(mid[2:])}.{suffix}"], transpose
    if tuple(mid) == ("lm_head",):
        return ["lm_head.weight"], transpose
    return [f"model.{'.'.join(mid)}.{suffix}"], transpose


def param_paths(state) -> Iterator[tuple[tuple[str, ...], nnx.Variable]]:
    for path, var in nnx.to_flat_state(state):
        yield tuple(str(p) for p in path), var


def default_param_dtype():
    """Base weights in bf16 on accelerators (GPU, TPU), f32 on CPU (DESIGN: numerics)."""
    return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32


def load_state_from_source(cfg: ModelConfig, source, *, lora=None, param_dtype=None, mesh=None) -> Decoder:
    """Build a `Decoder` whose base weights come from `source` (names/shape/get in HF names).

    The model is first built abstractly (no memory), then each parameter is read, transposed,
    stacked across layers and cast to `param_dtype` (default `default_param_dtype()`; a
    parameter the model builds in float32, DeepSeek's router, stays float32) one at a time.
    With a `mesh`, each parameter goes straight into its target sharding
    (`engine.sharding.state_shardings`): `jax.make_array_from_callback` asks for every device's
    slice, and the source reads only that slice where its format allows (`get_slice`,
    safetensors) or one whole tensor at a time (GGUF, whose quantised blocks span rows), so
    neither a device nor the host holds more than its shard plus one tensor. Adapters (if
    `lora`) are initialised from `lora.seed`. Errors name the missing, unexpected or misshapen
    tensor.
    """
    from jaxcook.engine.sharding import check_model, state_shardings

    if mesh is not None:  # heads over `tensor`, experts over `expert`: errors naming the key
        check_model(cfg, mesh)
    param_dtype = default_param_dtype() if param_dtype is None else param_dtype
    abstract = nnx.eval_shape(lambda: Decoder(cfg, lora=lora, param_dtype=param_dtype))
    graphdef, state = nnx.split(abstract)
    shardings = dict(nnx.to_flat_state(state_shardings(state, mesh))) if mesh is not None else None
    available = {n for n in source.names() if not n.endswith(IGNORED_SUFFIXES)}
    used: set[str] = set()
    for path, var in param_paths(state):
        shape, dtype = tuple(var.get_value().shape), var.get_value().dtype  # param_dtype, or f32 (router)
        target = shardings[tuple(_key(p) for p in path)] if shardings is not None else None
        if isinstance(var, nnx.LoRAParam):
            value = _init_adapter(path, shape, lora.seed)
            var.set_value(value if target is None else jax.device_put(value, _named(target)))
            continue
        names, transpose = hf_names(path, cfg)
        stacked = path[0] == "layers"
        per_layer = shape[1:] if stacked else shape
        expected = tuple(reversed(per_layer)) if transpose else per_layer
        for name in names:
            if name not in available:
                raise WeightsError(f"missing tensor {name} (for {'.'.join(path)}) in {_where(source)}")
            got = tuple(source.shape(name))
            if got != expected:
                raise WeightsError(f"tensor {name} has shape {got}, expected {expected} in {_where(source)}")
            used.add(name)
        if target is None:
            arrays = [source.get(n) for n in names]
            arrays = [w.T if transpose else w for w in arrays]
            value = np.stack(arrays) if stacked else arrays[0]
            var.set_value(jnp.asarray(value, dtype=dtype))
        else:
            read = _SliceReader(source, names, transpose, stacked, np.dtype(dtype))
            var.set_value(_sharded_array(shape, _named(target), read))
    unexpected = available - used
    if cfg.tie_word_embeddings:
        unexpected.discard("lm_head.weight")  # some tied checkpoints still store the shared matrix
    if unexpected:
        raise WeightsError(f"unexpected tensors in {_where(source)}: {sorted(unexpected)[:10]}")
    return nnx.merge(graphdef, state)


def _sharded_array(shape, sharding, read) -> jax.Array:
    """`jax.make_array_from_callback`, one device at a time: each device's slice is read, copied
    to the device (waiting for the copy) and released before the next is read, so the host holds
    one slice.

    XLA's CPU client adopts a 64-byte-aligned numpy buffer as the device buffer instead of
    copying it, even with `may_alias=False`: the slice would then stay alive as that device's
    memory, and which slices do depends on where malloc put them (the run-to-run spread the
    sharded-load test saw). Such a shard is copied once more on the device and the adopted one
    dropped. Then, for every shard, the loader waits until nothing else refers to the numpy
    buffer (`_wait_released`; a copied one, too, is held a little past `block_until_ready`), so
    every host buffer the loader made is released before the next slice is read.
    """
    arrays = []
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        host = np.ascontiguousarray(read(index))  # what device_put would copy to anyway
        shard = jax.device_put(host, device, may_alias=False).block_until_ready()
        if device.platform == "cpu" and shard.unsafe_buffer_pointer() == host.ctypes.data:
            shard = jax.device_put(shard, device, may_alias=False).block_until_ready()
        _wait_released(host)
        arrays.append(shard)
        del host, shard
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def _wait_released(host: np.ndarray, timeout_s: float = 1.0) -> None:
    """Wait (at most `timeout_s`) until only the caller's name refers to `host`. A dropped CPU
    buffer that adopted it lets go from a reference cycle, so the young generations are
    collected (microseconds) until it has."""
    deadline = time.monotonic() + timeout_s
    # referrers: the caller's `host`, this argument, getrefcount's own argument
    while sys.getrefcount(host) > 3 and time.monotonic() < deadline:
        gc.collect(1)
        time.sleep(1e-4)


def _key(p):
    return str(p)


def _named(target):
    return target.get_value() if isinstance(target, nnx.Variable) else target


class _SliceReader:
    """`index -> np.ndarray`: one device's slice of a parameter, read from the source.

    `index` is in our layout ([layers,] in, out); the HF tensors are per layer and [out, in]
    when `transpose`. A source with `get_slice` reads just the slice; otherwise the whole
    tensor is read once (kept while its shards are cut, then dropped with this reader).
    """

    def __init__(self, source, names, transpose: bool, stacked: bool, dtype):
        self.source, self.names, self.transpose, self.stacked, self.dtype = (
            source,
            names,
            transpose,
            stacked,
            dtype,
        )
        self._whole: dict[str, np.ndarray] = {}

    def _one(self, name: str, index: tuple) -> np.ndarray:
        hf_index = tuple(reversed(index)) if self.transpose else index
        if hasattr(self.source, "get_slice"):
            w = self.source.get_slice(name, hf_index)
        else:
            if name not in self._whole:
                self._whole.clear()  # hold one tensor at a time
                self._whole[name] = self.source.get(name)
            w = self._whole[name][hf_index]
        w = w.T if self.transpose else w
        return np.asarray(w).astype(self.dtype, copy=False)

    def __call__(self, index: tuple) -> np.ndarray:
        if not self.stacked:
            return self._one(self.names[0], tuple(index))
        layers, rest = range(len(self.names))[index[0]], tuple(index[1:])
        out = None
        for j, i in enumerate(layers):  # filled in place: no second copy of the stack
            w = self._one(self.names[i], rest)
            if out is None:
                out = np.empty((len(layers), *w.shape), self.dtype)
            out[j] = w
        return out


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
    for path, var in param_paths(nnx.state(model, (nnx.Param, Buffer))):
        if isinstance(var, nnx.LoRAParam):
            continue
        names, transpose = hf_names(path, cfg)
        value = np.asarray(jax.device_get(var.get_value()))
        slices = list(value) if path[0] == "layers" else [value]
        for name, w in zip(names, slices, strict=True):
            out[name] = np.ascontiguousarray(w.T if transpose else w)
    return out
