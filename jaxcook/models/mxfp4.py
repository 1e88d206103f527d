"""MXFP4 (OCP microscaling FP4), as GPT-OSS checkpoints store their expert weights.

A tensor `X` is stored as `X_blocks` (uint8 [..., R, G, 16]: 32 FP4 E2M1 codes per group, the
low nibble first) and `X_scales` (uint8 [..., R, G]: one power-of-two exponent per group,
biased by 127). Value = FP4[code] * 2^(scale - 127). The groups run along the input axis, so
the dequantised [..., R, G*32] is transposed to GPT-OSS's [..., G*32, R] parameter layout.
"""

from __future__ import annotations

import numpy as np

# E2M1 codes 0..15: sign bit, 2 exponent bits, 1 mantissa bit
FP4_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32
)


def dequantize(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 [..., G*32, R] from blocks [..., R, G, 16] and scales [..., R, G]."""
    if blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {blocks.shape} do not match scales {scales.shape}")
    blocks = blocks.astype(np.uint8)
    values = np.empty((*blocks.shape[:-1], blocks.shape[-1] * 2), np.float32)
    values[..., 0::2] = FP4_VALUES[blocks & 0x0F]
    values[..., 1::2] = FP4_VALUES[blocks >> 4]
    values = np.ldexp(values, scales.astype(np.int32)[..., None] - 127)
    *lead, R, G, B2 = values.shape
    return np.swapaxes(values.reshape(*lead, R, G * B2), -1, -2)
