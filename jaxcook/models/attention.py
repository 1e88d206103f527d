"""Grouped-query attention over segment ids: one function for packed, padded and cached inputs.

A query at slot i may attend to a key at slot j iff `j <= i` (causal), both carry the same
segment id, and the key's segment is not 0 (0 marks padding or an empty cache slot). Packed
sequences get distinct segment ids within a row; padded rows use 0 on the padding; a KV cache
is the same rule with the cache's own segment ids.

Shared prefixes (`branch` ids, training only): several sequences that start with the same
tokens sit in one segment as the prefix once, then each sequence's own continuation (its
branch, ids 1, 2, ...; the prefix is branch 0). A key is then visible iff the rule above holds
and the key is in the prefix or in the query's own branch, so each continuation sees the prefix
and itself, never a sibling; its positions continue from the prefix's length.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxcook.engine.sharding import constrain

_MASKED = -1e30  # finite, so a fully masked row (a padding query) gives a uniform row, not NaN


def attention_mask(
    q_slot_T,
    k_slot_S,
    q_seg_BT,
    k_seg_BS,
    window: int | None = None,
    *,
    branches: tuple | None = None,
) -> jnp.ndarray:
    """Boolean mask [B, T, S]; with `window`, only keys fewer than `window` positions back.

    Slots are consecutive within a segment (packed rows, left-padded prompts and their
    continuation alike), so a slot distance is a position distance. `branches`, a tuple
    `(q_branch_BT, k_branch_BS, q_pos_BT, k_pos_BS)`, adds the shared-prefix rule (module doc);
    there a slot distance is not a position distance, so the window is measured in positions.
    """
    causal_TS = k_slot_S[None, :] <= q_slot_T[:, None]
    if window is not None and branches is None:
        causal_TS = causal_TS & (k_slot_S[None, :] > q_slot_T[:, None] - window)
    same_BTS = q_seg_BT[:, :, None] == k_seg_BS[:, None, :]
    mask_BTS = causal_TS[None] & same_BTS & (k_seg_BS[:, None, :] != 0)
    if branches is None:
        return mask_BTS
    q_branch_BT, k_branch_BS, q_pos_BT, k_pos_BS = branches
    k_branch_B1S = k_branch_BS[:, None, :]
    mask_BTS = mask_BTS & ((k_branch_B1S == 0) | (k_branch_B1S == q_branch_BT[:, :, None]))
    if window is not None:
        mask_BTS = mask_BTS & (k_pos_BS[:, None, :] > q_pos_BT[:, :, None] - window)
    return mask_BTS


QUERY_CHUNK = 512  # queries per block of the XLA path (scores held: [B, K, G, 512, S] f32)


def gqa_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale: float | None = None, sinks_H=None) -> jnp.ndarray:
    """Softmax attention with H query heads sharing K key/value heads; returns [B, T, H, D].

    On GPU, `jax.nn.dot_product_attention` (cuDNN flash attention for bf16/f16: no [T, S]
    scores in memory); elsewhere (CPU, and TPU for now) the XLA path `xla_attention`, in query
    blocks. Heads stay split over `tensor` on a mesh (each device attends with its own query
    and kv heads). `scale` defaults to D^-1/2; attention sinks (`sinks_H`, GPT-OSS) take the
    XLA path everywhere.
    """
    q_BTHD = constrain(q_BTHD, ("batch", None, "heads", None))
    k_BSKD = constrain(k_BSKD, ("batch", None, "kv_heads", None))
    v_BSKD = constrain(v_BSKD, ("batch", None, "kv_heads", None))
    gpu_kernel = jax.default_backend() == "gpu" and q_BTHD.dtype in (jnp.bfloat16, jnp.float16)
    if gpu_kernel and sinks_H is None:
        out_BTHD = dpa_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, implementation="cudnn", scale=scale)
    else:
        out_BTHD = xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale, sinks_H)
    return constrain(out_BTHD, ("batch", None, "heads", None))


def dpa_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, *, implementation=None, scale=None) -> jnp.ndarray:
    """`jax.nn.dot_product_attention` with our causal + segment mask (GQA handled by it)."""
    return jax.nn.dot_product_attention(
        q_BTHD, k_BSKD, v_BSKD, mask=mask_BTS[:, None], scale=scale, implementation=implementation
    )


def _query_chunk(T: int) -> int:
    """T itself up to QUERY_CHUNK (one block: no loop); beyond it the largest power-of-two block
    <= QUERY_CHUNK that divides T (T itself if none >= 64)."""
    if T <= QUERY_CHUNK:
        return T
    c = QUERY_CHUNK
    while c >= 64:
        if T > c and T % c == 0:
            return c
        c //= 2
    return T


def xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale: float | None = None, sinks_H=None) -> jnp.ndarray:
    return _xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale, sinks_H)


@partial(jax.checkpoint, static_argnums=(4,))  # every argument passed: static_argnums needs it
def _xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale, sinks_H) -> jnp.ndarray:
    """The XLA softmax attention, `QUERY_CHUNK` queries at a time for long sequences.

    Rematerialised: the backward pass recomputes the [B, K, G, T, S] scores and probabilities
    instead of keeping them for every layer. Measured on SmolLM2-135M (the jaxcook LoRA r8 step of
    `benchmarks/train_step.py`, 8 x 256, CPU, under `/usr/bin/time`): the same step time, max RSS
    6.0 -> 4.9 GB; the saving grows with T x S. Query blocks (each row's softmax is over all S
    keys, so the numbers are the same) bound the scores held at once to [B, K, G, 512, S]:
    `benchmarks/memory_plan.py` shows what that saves at 4096 tokens. `scale` defaults to D^-1/2.

    `sinks_H` (GPT-OSS): one more logit per head in every softmax, attached to no value, so a
    query can attend to "nothing": probs = exp(s) / (sum exp(s) + exp(sink)).
    """
    B, T, H, D = q_BTHD.shape
    C = _query_chunk(T)
    if C == T:
        return _attend(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale, sinks_H)
    n = T // C
    q_nBCHD = q_BTHD.reshape(B, n, C, H, D).swapaxes(0, 1)
    mask_nBCS = mask_BTS.reshape(B, n, C, -1).swapaxes(0, 1)
    blocks = jax.lax.map(
        jax.checkpoint(lambda qm: _attend(qm[0], k_BSKD, v_BSKD, qm[1], scale, sinks_H)),
        (q_nBCHD, mask_nBCS),
    )
    return blocks.swapaxes(0, 1).reshape(B, T, H, D)


def _attend(q_BTHD, k_BSKD, v_BSKD, mask_BTS, scale=None, sinks_H=None):
    B, T, H, D = q_BTHD.shape
    K = k_BSKD.shape[2]
    q_BTKGD = q_BTHD.reshape(B, T, K, H // K, D)  # query heads grouped by their kv head
    scores_BKGTS = jnp.einsum("btkgd,bskd->bkgts", q_BTKGD, k_BSKD, preferred_element_type=jnp.float32)
    scores_BKGTS = scores_BKGTS * (D**-0.5 if scale is None else scale)
    scores_BKGTS = jnp.where(mask_BTS[:, None, None], scores_BKGTS, _MASKED)
    if sinks_H is None:
        probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(v_BSKD.dtype)
    else:
        sink_KG11 = sinks_H.astype(jnp.float32).reshape(K, H // K, 1, 1)
        top_BKGT1 = jnp.maximum(jnp.max(scores_BKGTS, axis=-1, keepdims=True), sink_KG11)
        exp_BKGTS = jnp.exp(scores_BKGTS - top_BKGT1)
        denom_BKGT1 = jnp.sum(exp_BKGTS, axis=-1, keepdims=True) + jnp.exp(sink_KG11 - top_BKGT1)
        probs_BKGTS = (exp_BKGTS / denom_BKGT1).astype(v_BSKD.dtype)
    out_BTKGD = jnp.einsum("bkgts,bskd->btkgd", probs_BKGTS, v_BSKD)
    return out_BTKGD.reshape(B, T, H, D)
