"""Rotary position embeddings (HF `rotate_half` layout), with Llama 3.1 and linear scaling."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np


def inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> np.ndarray:
    """`inv_freq[i] = theta^(-2i/head_dim)`, adjusted by the rope scaling rule. Shape [head_dim/2]."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif rope_type == "llama3":
        # Llama 3.1: long wavelengths are divided by `factor`, short ones kept, and the band in
        # between interpolated smoothly.
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        interpolated = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        inv_freq = np.where(is_medium, interpolated, inv_freq)
    return inv_freq.astype(np.float32)


def rope_cos_sin(positions_BT: jnp.ndarray, inv_freq_F: np.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos, sin of shape [B, T, head_dim] (the half-frequencies repeated twice)."""
    angles_BTF = positions_BT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq_F)
    angles_BTD = jnp.concatenate([angles_BTF, angles_BTF], axis=-1)
    return jnp.cos(angles_BTD), jnp.sin(angles_BTD)


def apply_rope(x_BTHD: jnp.ndarray, cos_BTD: jnp.ndarray, sin_BTD: jnp.ndarray) -> jnp.ndarray:
    half = x_BTHD.shape[-1] // 2
    x1, x2 = x_BTHD[..., :half], x_BTHD[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = cos_BTD[:, :, None, :], sin_BTD[:, :, None, :]
    return (x_BTHD.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x_BTHD.dtype)
