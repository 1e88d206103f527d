"""The K most likely next tokens and their log-probabilities, without whole-batch logits.

Like `chunked_target_logprobs`: the final hidden states are cut into chunks of `chunk_tokens`
positions; each chunk is unembedded to f32 logits [C, V], reduced to its top K ids and their
log-probabilities under the full softmax (log p = logit - logsumexp over the vocabulary), and
discarded, so peak memory holds one chunk's logits. Used to make soft targets for off-policy
distillation (the teacher's top-K distribution at every position).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def chunked_topk_logprobs(unembed, hidden_BTD, k: int, *, chunk_tokens: int = 1024):
    """(ids_BTK int32, logp_BTK f32): per position, the `k` most likely tokens, most likely first,
    and their log-probabilities log softmax(unembed(h))[id]."""
    B, T, D = hidden_BTD.shape
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    N = B * T
    C = min(chunk_tokens, N)
    pad = (-N) % C
    h_ND = jnp.pad(hidden_BTD.reshape(N, D), ((0, pad), (0, 0)))

    def chunk(h_CD):
        logits_CV = unembed(h_CD).astype(jnp.float32)
        lse_C = jax.nn.logsumexp(logits_CV, axis=-1)
        top_CK, ids_CK = jax.lax.top_k(logits_CV, k)
        return ids_CK.astype(jnp.int32), top_CK - lse_C[:, None]

    ids, lp = jax.lax.map(chunk, h_ND.reshape(-1, C, D))  # [N/C, C, K] each
    ids_NK, lp_NK = ids.reshape(N + pad, k)[:N], lp.reshape(N + pad, k)[:N]
    return ids_NK.reshape(B, T, k), lp_NK.reshape(B, T, k)
