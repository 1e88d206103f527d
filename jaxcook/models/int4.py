"""Packed INT4 weights, as Kimi K2 Thinking stores its routed experts (compressed-tensors'
`pack-quantized` format: `quant_method: compressed-tensors`, symmetric int4 in groups along the
input dimension).

A quantised linear `X` [R, C] = [out, in] is stored as `X.weight_packed` (int32 [R, ceil(C / 8)]:
eight 4-bit values per word, value j of a row in word j // 8 at bit 4 * (j % 8), each stored as
q + 8 so q is in [-8, 7]), `X.weight_scale` ([R, ceil(C / group)], one scale per group of input
columns) and `X.weight_shape` ([R, C]). Value = q * scale of its group. `PackedInt4Source`
presents such a checkpoint's weights dequantised to float32 under the plain `X.weight` name and
hides the three stored tensors; tensors without them (attention, shared experts, the dense first
layers, embeddings, lm_head, the router) pass through unchanged.
"""

from __future__ import annotations

import numpy as np

from jaxcook.models.safetensors_source import WeightsError

PACKED, SCALE, SHAPE = ".weight_packed", ".weight_scale", ".weight_shape"
_PER_WORD = 8  # 4-bit values in an int32


def unpack(packed: np.ndarray, columns: int) -> np.ndarray:
    """int8 q [..., R, columns] in [-8, 7] from the int32 words [..., R, ceil(columns / 8)]."""
    words = np.ascontiguousarray(packed).view(np.uint32)
    need = -(-columns // _PER_WORD)
    if words.shape[-1] != need:
        raise ValueError(f"{columns} columns need {need} int32 words a row, got {words.shape[-1]}")
    shifts = np.arange(_PER_WORD, dtype=np.uint32) * 4
    nibbles = (words[..., None] >> shifts) & 0xF  # [..., R, words, 8]: value j at [j // 8, j % 8]
    q = nibbles.reshape(*words.shape[:-1], -1)[..., :columns]
    return (q.astype(np.int16) - 8).astype(np.int8)


def dequantize(packed: np.ndarray, scale: np.ndarray, shape: tuple[int, int], group: int) -> np.ndarray:
    """float32 [R, C] = q * scale[:, column // group] from the packed words and group scales."""
    R, C = shape
    want = (R, -(-C // group))
    if tuple(scale.shape) != want:
        raise ValueError(f"INT4 weight {shape} in groups of {group} needs scales {want}, got {scale.shape}")
    if packed.shape[0] != R:
        raise ValueError(f"INT4 weight {shape} has {packed.shape[0]} packed rows")
    q = unpack(packed, C)
    scale_RC = np.repeat(scale.astype(np.float32), group, axis=-1)[:, :C]
    return q.astype(np.float32) * scale_RC


class PackedInt4Source:
    """A weight source with each `X.weight_packed` (+ scale, shape) read as a dequantised `X.weight`."""

    def __init__(self, source, group: int):
        self.source, self.group = source, int(group)
        self.folder = getattr(source, "folder", None) or getattr(source, "path", None)
        names = source.names()
        self._packed = {n[: -len(PACKED)] for n in names if n.endswith(PACKED)}
        stored = {x + suffix for x in self._packed for suffix in (PACKED, SCALE, SHAPE)}
        for x in sorted(self._packed):
            for suffix in (SCALE, SHAPE):
                if x + suffix not in names:
                    raise WeightsError(f"{self.folder}: {x}{PACKED} has no {x}{suffix}")
        self._names = [n for n in names if n not in stored] + [x + ".weight" for x in sorted(self._packed)]

    def _base(self, name: str) -> str | None:
        base = name.removesuffix(".weight")
        return base if name.endswith(".weight") and base in self._packed else None

    def names(self) -> list[str]:
        return self._names

    def _shape_of(self, base: str) -> tuple[int, int]:
        shape = tuple(int(d) for d in np.asarray(self.source.get(base + SHAPE)).reshape(-1))
        if len(shape) != 2 or min(shape) <= 0:
            raise WeightsError(f"{self.folder}: {base}{SHAPE} {shape} is not a 2-D [out, in] shape")
        return shape

    def shape(self, name: str) -> tuple[int, ...]:
        base = self._base(name)
        return tuple(self.source.shape(name)) if base is None else self._shape_of(base)

    def get(self, name: str) -> np.ndarray:
        base = self._base(name)
        if base is None:
            return self.source.get(name)
        packed = self.source.get(base + PACKED)
        if packed.dtype != np.int32:
            raise WeightsError(f"{self.folder}: {base}{PACKED} has dtype {packed.dtype}, not int32")
        try:
            return dequantize(packed, self.source.get(base + SCALE), self._shape_of(base), self.group)
        except ValueError as e:
            raise WeightsError(f"{self.folder}: {base}.weight: {e}") from e


# compressed-tensors `quantization_config` fields read; the others must be absent or empty.
_TOP_FIELDS = {
    "quant_method",
    "format",
    "config_groups",
    "ignore",  # which modules stay unquantised: read from the tensors themselves (no weight_packed)
    "quantization_status",
    "kv_cache_scheme",
    "sparsity_config",
    "transform_config",
    "global_compression_ratio",
    "version",
}
# weight arguments that must have exactly these values, with compressed-tensors' defaults for an
# absent one (others, e.g. the observer, are calibration settings)
_WEIGHTS_FIXED = {
    "num_bits": (4, 8),
    "type": ("int", "int"),
    "symmetric": (True, True),
    "strategy": ("group", None),
    "dynamic": (False, False),
    "actorder": (None, None),
    "block_structure": (None, None),
}


def read_compressed_int4(quant: dict, source: str) -> int:
    """The group size of a compressed-tensors `pack-quantized` symmetric int4 config; anything
    else (other bits, zero points, activation quantisation, sparsity) is an error naming the field."""
    from jaxcook.models.config import ConfigError

    where = f"{source}: quantization_config"
    for key in quant:
        if key not in _TOP_FIELDS:
            raise ConfigError(f"{where}: unsupported field {key!r}")
    if quant.get("format") != "pack-quantized":
        raise ConfigError(f"{where}.format {quant.get('format')!r} is not supported (only 'pack-quantized')")
    if quant.get("quantization_status", "compressed") != "compressed":
        raise ConfigError(f"{where}.quantization_status {quant['quantization_status']!r}: only 'compressed'")
    for key in ("kv_cache_scheme", "sparsity_config", "transform_config"):
        if quant.get(key):
            raise ConfigError(f"{where}.{key} is not supported (only weight quantisation)")
    groups = quant.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise ConfigError(f"{where}.config_groups must be a non-empty object")
    sizes = set()
    for name, group in groups.items():
        at = f"{where}.config_groups.{name}"
        for key in ("input_activations", "output_activations"):
            if group.get(key) is not None:
                raise ConfigError(f"{at}.{key} is not supported (only weight quantisation)")
        if group.get("format", "pack-quantized") != "pack-quantized":
            raise ConfigError(f"{at}.format {group['format']!r} is not supported (only 'pack-quantized')")
        weights = group.get("weights")
        if not isinstance(weights, dict):
            raise ConfigError(f"{at}.weights must be an object")
        for key, (want, default) in _WEIGHTS_FIXED.items():
            got = weights.get(key, default)
            if got != want:
                raise ConfigError(f"{at}.weights.{key} {got!r} is not supported (only {want!r})")
        size = weights.get("group_size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ConfigError(f"{at}.weights.group_size {size!r} must be a positive int")
        sizes.add(size)
    if len(sizes) != 1:
        raise ConfigError(f"{where}.config_groups: groups of different group_size {sorted(sizes)}")
    return sizes.pop()
