"""Rotary position embeddings (HF `rotate_half` layout), with Llama 3.1, linear and YaRN scaling."""

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
    elif rope_type == "yarn":
        inv_freq = _yarn(inv_freq, head_dim, theta, scaling)
    return inv_freq.astype(np.float32)


def _yarn(inv_freq: np.ndarray, dim: int, theta: float, scaling: dict[str, Any]) -> np.ndarray:
    """YaRN (arXiv 2309.00071): frequencies that turn fewer than `beta_slow` times over the
    original context are interpolated (divided by `factor`), more than `beta_fast` times kept,
    with a linear ramp over the dimensions in between."""
    factor, old_len = scaling["factor"], scaling["original_max_position_embeddings"]
    beta_fast, beta_slow = scaling.get("beta_fast") or 32.0, scaling.get("beta_slow") or 1.0

    def dim_of(rotations):  # the dimension whose wavelength fits `rotations` times in old_len
        return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    high = high + 0.001 if low == high else high
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # 1: extrapolate (keep the frequency), 0: interpolate
    return inv_freq / factor * (1 - keep) + inv_freq * keep


def attention_factor(scaling: dict[str, Any] | None) -> float:
    """The factor YaRN multiplies cos and sin by (1 for the other rope types)."""
    if (scaling or {}).get("rope_type") != "yarn":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor = scaling["factor"]

    def mscale(m=1.0):
        return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0

    if scaling.get("mscale") and scaling.get("mscale_all_dim"):
        return mscale(scaling["mscale"]) / mscale(scaling["mscale_all_dim"])
    return mscale()


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
