"""Block-FP8 weights, as DeepSeek V3 checkpoints store their linear layers (transformers'
`FineGrainedFP8Config`: `quant_method: fp8`, `fmt: e4m3`, `weight_block_size: [br, bc]`).

A quantised linear `X` is stored as `X.weight` (float8_e4m3fn [R, C] = [out, in]) and
`X.weight_scale_inv` (float32 [ceil(R/br), ceil(C/bc)]: one scale per br x bc block, the edge
blocks partial when R or C is not a multiple). Value = float(weight) * scale_inv of its block.
`Fp8Source` presents such a checkpoint's weights dequantised to float32 (the loader casts them
to the model's param dtype) and hides the `*.weight_scale_inv` tensors; tensors without a scale
(norms, embeddings, lm_head, the router and its correction bias) pass through unchanged.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from jaxcook.models.safetensors_source import WeightsError

SCALE_SUFFIX = "_scale_inv"


def dequantize(weight: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """float32 [..., R, C] from FP8 `weight` [..., R, C] and `scale_inv` [..., Rb, Cb] (one
    scale per `block` = (br, bc) tile; Rb = ceil(R / br), Cb = ceil(C / bc))."""
    br, bc = block
    *lead, R, C = weight.shape
    want = (*lead, -(-R // br), -(-C // bc))
    if tuple(scale_inv.shape) != want:
        raise ValueError(
            f"FP8 weight {weight.shape} with blocks {block} needs scales {want}, got {scale_inv.shape}"
        )
    if scale_inv.dtype == np.uint8:  # E8M0 exponents as raw bytes: 2^(byte - 127)
        scale_RbCb = np.ldexp(np.float32(1.0), scale_inv.astype(np.int32) - 127)
    else:
        scale_RbCb = scale_inv.astype(np.float32)
    # [..., Rb, Cb] -> [..., Rb*br, Cb*bc], then cut to [..., R, C] (the partial edge blocks)
    scale_RC = np.repeat(np.repeat(scale_RbCb, br, axis=-2), bc, axis=-1)[..., :R, :C]
    return weight.astype(np.float32) * scale_RC


class Fp8Source:
    """A weight source with each `X.weight` that has an `X.weight_scale_inv` dequantised on read."""

    def __init__(self, source, block: tuple[int, int]):
        self.source, self.block = source, tuple(block)
        self.folder = getattr(source, "folder", None) or getattr(source, "path", None)
        names = source.names()
        scales = {n for n in names if n.endswith(SCALE_SUFFIX)}
        self._quantised = {n[: -len(SCALE_SUFFIX)] for n in scales}
        self._names = [n for n in names if n not in scales]
        missing = sorted(self._quantised - set(self._names))
        if missing:
            raise WeightsError(f"{self.folder}: {missing[0]}{SCALE_SUFFIX} has no {missing[0]}")

    def names(self) -> list[str]:
        return self._names

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.source.shape(name))

    def get(self, name: str) -> np.ndarray:
        w = self.source.get(name)
        if name not in self._quantised:
            return w
        if w.dtype != ml_dtypes.float8_e4m3fn:
            raise WeightsError(f"{self.folder}: {name} has a scale but dtype {w.dtype}, not float8_e4m3fn")
        try:
            return dequantize(w, self.source.get(name + SCALE_SUFFIX), self.block)
        except ValueError as e:
            raise WeightsError(f"{self.folder}: {name}: {e}") from e
