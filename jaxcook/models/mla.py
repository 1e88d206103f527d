"""Multi-head latent attention (DeepSeek V2/V3, Kimi K2) and its compressed KV cache.

Every token has one latent c = RMSNorm(x @ W_dkv) [r] and one rope key k_r = rope(x @ W_kr)
[dr] (both from `kv_a_proj_with_mqa`), shared by all H heads; head h reads its key and value
out of the latent through `kv_b_proj` (W_uk_h [r, dn], W_uv_h [r, dv]):

    q_h = [q_nope_h, rope(q_rope_h)]       from x @ q_proj, or q_b(RMSNorm(q_a(x))) (low rank)
    k_h = [c @ W_uk_h, k_r]                 v_h = c @ W_uv_h
    out = concat_h softmax(q_h . k_h * scale) v_h  @ o_proj

with scale = (dn + dr)^-1/2, times mscale(factor, mscale_all_dim)^2 under YaRN (HF
`yarn_apply_mscale`). Rope acts on the dr rope dimensions only; DeepSeek's checkpoints store
them as interleaved (even, odd) pairs, de-interleaved here before the usual rotate-half rope
(the same numbers as HF `apply_rotary_pos_emb_interleave`).

Cache: per layer and slot only c and k_r, as [B, S, 1, r] and [B, S, 1, dr] (one shared
"head"; the decoder cache's `k` and `v`), not H x (dn + dr + dv) per-head keys and values: for
DeepSeek V3 576 numbers per token and layer instead of 128 x 320 = 40960 (71x smaller).

Two ways to attend, equal in exact arithmetic (a test checks them against each other):
- expand: k_h and v_h for every key slot, then ordinary attention (`gqa_attention` with H kv
  heads, v zero-padded to the key width; the cuDNN path on GPU). Training and prefill.
- absorb: q_h . k_h = (q_nope_h W_uk_h^T) . c + q_rope_h . k_r and out_h = (p_h . c) W_uv_h:
  the heads attend over the cached latents directly (MQA with width r + dr), so decode never
  rebuilds per-head keys and values of the S cached slots.
The cached call picks whichever costs fewer multiply-adds for its T queries and S slots
(`absorbs`): decode steps absorb (expanding would re-project all S cached latents every step,
S x r x H x (dn + dv)), prefills of more than ~170 tokens (DeepSeek V3 sizes) expand.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcook.models.attention import _MASKED, gqa_attention
from jaxcook.models.config import MlaConfig, ModelConfig
from jaxcook.models.layers import Linear, RMSNorm
from jaxcook.models.rope import apply_rope

LATENT_NORM_EPS = 1e-6  # HF builds q_a_layernorm and kv_a_layernorm with the default eps


def softmax_scale(cfg: ModelConfig) -> float:
    """(dn + dr)^-1/2, times mscale(factor, mscale_all_dim)^2 for a scaled rope (HF)."""
    mla = cfg.mla
    scale = (mla.qk_nope_head_dim + mla.qk_rope_head_dim) ** -0.5
    rope = cfg.rope_scaling or {}
    if rope.get("mscale_all_dim"):
        factor, m = rope["factor"], rope["mscale_all_dim"]
        mscale = 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0
        scale = scale * mscale * mscale
    return scale


def absorbs(mla: MlaConfig, T: int, S: int) -> bool:
    """Whether attending in the latent (absorb) costs fewer multiply-adds per head than expanding.

    expand: S r (dn + dv) to build every slot's keys and values, T S (2 (dn + dr)) to attend
    (values padded to the key width); absorb: T r (dn + dv) to move queries and outputs through
    W_uk, W_uv, T S (2 r + dr) to attend over the latents.
    """
    r, dn, dr, dv = mla.kv_lora_rank, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim
    expand = S * r * (dn + dv) + T * S * 2 * (dn + dr)
    absorb = T * r * (dn + dv) + T * S * (2 * r + dr)
    return absorb < expand


def deinterleave(x):
    """(x0, x1, x2, x3, ...) -> (x0, x2, ..., x1, x3, ...) over the last axis."""
    return jnp.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)


def expanded_attention(q_nope_BTHN, q_rope_BTHR, k_nope_BSHN, k_rope_BSR, v_BSHV, mask_BTS, scale):
    """Ordinary attention over per-head keys [k_nope_h, k_r] and values v_h; [B, T, H, dv]."""
    B, S, H, _ = k_nope_BSHN.shape
    dv, dr = v_BSHV.shape[-1], k_rope_BSR.shape[-1]
    q_BTHD = jnp.concatenate([q_nope_BTHN, q_rope_BTHR], axis=-1)
    k_rope_BSHR = jnp.broadcast_to(k_rope_BSR[:, :, None, :], (B, S, H, dr))
    k_BSHD = jnp.concatenate([k_nope_BSHN, k_rope_BSHR.astype(k_nope_BSHN.dtype)], axis=-1)
    pad = q_BTHD.shape[-1] - dv  # gqa_attention wants values as wide as keys
    v_BSHD = jnp.pad(v_BSHV, ((0, 0), (0, 0), (0, 0), (0, max(pad, 0))))
    if pad < 0:  # values wider than keys: pad the query and key instead (zeros add nothing)
        q_BTHD = jnp.pad(q_BTHD, ((0, 0), (0, 0), (0, 0), (0, -pad)))
        k_BSHD = jnp.pad(k_BSHD, ((0, 0), (0, 0), (0, 0), (0, -pad)))
    return gqa_attention(q_BTHD, k_BSHD, v_BSHD, mask_BTS, scale)[..., :dv]


def absorbed_attention(q_lat_BTHC, q_rope_BTHR, c_BSC, k_rope_BSR, mask_BTS, scale):
    """Attention of H heads over shared latents: scores q_lat . c + q_rope . k_r; returns the
    probability-weighted latents [B, T, H, r] (times W_uv_h gives each head's output)."""
    scores_BHTS = jnp.einsum("bthc,bsc->bhts", q_lat_BTHC, c_BSC, preferred_element_type=jnp.float32)
    scores_BHTS += jnp.einsum("bthr,bsr->bhts", q_rope_BTHR, k_rope_BSR, preferred_element_type=jnp.float32)
    scores_BHTS = jnp.where(mask_BTS[:, None], scores_BHTS * scale, _MASKED)
    probs_BHTS = jax.nn.softmax(scores_BHTS, axis=-1).astype(c_BSC.dtype)
    return jnp.einsum("bhts,bsc->bthc", probs_BHTS, c_BSC)


def effective_kernel(linear: Linear, dtype):
    """A linear layer's kernel with its LoRA adapter folded in ([in, out]), for products that
    use the weight itself rather than `linear(x)` (absorbed attention)."""
    kernel = linear.kernel[...].astype(dtype)
    if linear.lora_a is None:
        return kernel
    delta = linear.lora_a[...].astype(dtype) @ linear.lora_b[...].astype(dtype)
    return kernel + delta * jnp.asarray(linear.lora_scale, dtype)


class MLAttention(nnx.Module):
    """HF `DeepseekV3Attention`; called like `decoder.Attention` (the cache is (latent, rope key))."""

    def __init__(self, cfg: ModelConfig, *, lora_rank: int, lora_alpha, param_dtype, rngs: nnx.Rngs):
        mla = cfg.mla
        D, H = cfg.hidden_size, cfg.num_heads
        dn, dr, dv, r = mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim, mla.kv_lora_rank
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        norm = dict(eps=LATENT_NORM_EPS, axis_name=None, param_dtype=param_dtype)
        if mla.q_lora_rank is None:
            self.q_proj = Linear(D, H * (dn + dr), axes=("embed", "heads"), **common)
        else:
            self.q_a_proj = Linear(D, mla.q_lora_rank, axes=("embed", None), **common)
            self.q_a_layernorm = RMSNorm(mla.q_lora_rank, **norm)
            self.q_b_proj = Linear(mla.q_lora_rank, H * (dn + dr), axes=(None, "heads"), **common)
        self.kv_a_proj_with_mqa = Linear(D, r + dr, axes=("embed", None), **common)
        self.kv_a_layernorm = RMSNorm(r, **norm)
        self.kv_b_proj = Linear(r, H * (dn + dv), axes=(None, "heads"), **common)
        self.o_proj = Linear(H * dv, D, axes=("heads", "embed"), **common)
        self.mla, self.heads, self.scale = mla, H, softmax_scale(cfg)

    def queries(self, x_BTD):
        B, T, _ = x_BTD.shape
        if self.mla.q_lora_rank is None:
            q = self.q_proj(x_BTD)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTD)))
        q_BTHQ = q.reshape(B, T, self.heads, -1)
        return q_BTHQ[..., : self.mla.qk_nope_head_dim], q_BTHQ[..., self.mla.qk_nope_head_dim :]

    def __call__(self, x_BTD, cos, sin, mask_BTS, cache_kv=None, cache_index=None):
        mla, H = self.mla, self.heads
        B, T, _ = x_BTD.shape
        dn, r = mla.qk_nope_head_dim, mla.kv_lora_rank
        q_nope_BTHN, q_rope_BTHR = self.queries(x_BTD)
        ckv_BTX = self.kv_a_proj_with_mqa(x_BTD)
        c_BT1C = self.kv_a_layernorm(ckv_BTX[..., :r])[:, :, None, :]
        k_rope_BT1R = ckv_BTX[..., None, r:]
        if mla.rope_interleave:
            q_rope_BTHR, k_rope_BT1R = deinterleave(q_rope_BTHR), deinterleave(k_rope_BT1R)
        q_rope_BTHR, k_rope_BT1R = apply_rope(q_rope_BTHR, cos, sin), apply_rope(k_rope_BT1R, cos, sin)
        absorb = False
        if cache_kv is not None:  # write this call's latents at slots index..index+T
            c_cache, k_cache = cache_kv
            c_BT1C = jax.lax.dynamic_update_slice(
                c_cache, c_BT1C.astype(c_cache.dtype), (0, cache_index, 0, 0)
            )
            k_rope_BT1R = jax.lax.dynamic_update_slice(
                k_cache, k_rope_BT1R.astype(k_cache.dtype), (0, cache_index, 0, 0)
            )
            absorb = absorbs(mla, T, c_BT1C.shape[1])
        dtype = q_nope_BTHN.dtype
        c_BSC, k_rope_BSR = c_BT1C[:, :, 0].astype(dtype), k_rope_BT1R[:, :, 0].astype(dtype)
        S = c_BSC.shape[1]
        if absorb:
            w_CHX = effective_kernel(self.kv_b_proj, dtype).reshape(r, H, -1)  # X = dn + dv
            q_lat_BTHC = jnp.einsum("bthn,chn->bthc", q_nope_BTHN, w_CHX[..., :dn])
            lat_BTHC = absorbed_attention(q_lat_BTHC, q_rope_BTHR, c_BSC, k_rope_BSR, mask_BTS, self.scale)
            out_BTHV = jnp.einsum("bthc,chv->bthv", lat_BTHC, w_CHX[..., dn:])
        else:
            kv_BSHX = self.kv_b_proj(c_BSC).reshape(B, S, H, -1)
            out_BTHV = expanded_attention(
                q_nope_BTHN,
                q_rope_BTHR,
                kv_BSHX[..., :dn],
                k_rope_BSR,
                kv_BSHX[..., dn:],
                mask_BTS,
                self.scale,
            )
        return self.o_proj(out_BTHV.reshape(B, T, -1)), (c_BT1C, k_rope_BT1R)
