"""Target log-probabilities without full-vocabulary logits for the whole batch.

The final hidden states are cut into chunks of `chunk_tokens` positions; each chunk is
unembedded to f32 logits [C, V], reduced to the log-probabilities of its targets, and
discarded. The chunk body is rematerialised in the backward pass, so peak memory holds one
chunk's logits (C x V x 4 bytes), not the batch's (B x T x V x 4 bytes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def chunked_target_logprobs(unembed, hidden_BTD, targets_BT, *, chunk_tokens: int = 1024):
    """log softmax(unembed(h))[target] for targets [B, T] or soft targets [B, T, K]."""
    B, T, D = hidden_BTD.shape
    soft = targets_BT.ndim == 3
    N = B * T
    C = min(chunk_tokens, N)
    pad = (-N) % C
    h_ND = jnp.pad(hidden_BTD.reshape(N, D), ((0, pad), (0, 0)))
    t_N = targets_BT.reshape(N, -1) if soft else targets_BT.reshape(N, 1)
    t_N = jnp.pad(t_N, ((0, pad), (0, 0)))

    @jax.checkpoint
    def chunk(args):
        h_CD, t_CK = args
        logits_CV = unembed(h_CD).astype(jnp.float32)
        lse_C = jax.nn.logsumexp(logits_CV, axis=-1)
        return jnp.take_along_axis(logits_CV, t_CK, axis=-1) - lse_C[:, None]

    lp = jax.lax.map(chunk, (h_ND.reshape(-1, C, D), t_N.reshape(-1, C, t_N.shape[-1])))
    lp = lp.reshape(N + pad, -1)[:N]
    return lp.reshape(B, T, -1) if soft else lp.reshape(B, T)


def target_logprobs(model, batch, *, remat: bool = False, chunk_tokens: int = 1024):
    """Per-position log p(target) [B, T] (or [B, T, K]) of a `Batch` under `model`."""
    hidden_BTD = model(batch.tokens_BT, batch.positions_BT, batch.segment_ids_BT, remat=remat)
    return chunked_target_logprobs(model.unembed, hidden_BTD, batch.targets_BT, chunk_tokens=chunk_tokens)
