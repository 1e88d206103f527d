"""Target log-probabilities without full-vocabulary logits for the whole batch.

The final hidden states are cut into chunks of at most `chunk_tokens` positions (by default as
many as keep one chunk's f32 logits under `CHUNK_LOGIT_BYTES`); each chunk is unembedded to f32
logits [C, V], reduced to the log-probabilities of its targets, and discarded. With several
chunks the chunk body is rematerialised in the backward pass, so peak memory holds one chunk's
logits (C x V x 4 bytes), not the batch's (B x T x V x 4 bytes). A batch that fits in one chunk
is not rematerialised: recomputing its logits would cost an extra unembedding and save nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CHUNK_LOGIT_BYTES = 512 * 2**20


def chunk_size(n_tokens: int, vocab: int, chunk_tokens: int | None = None) -> int:
    """Positions per chunk: the fewest chunks of at most `chunk_tokens` positions (default: one
    chunk's f32 logits within `CHUNK_LOGIT_BYTES`), evened out so padding stays under one
    position per chunk."""
    cap = chunk_tokens or max(1, CHUNK_LOGIT_BYTES // (4 * vocab))
    n_chunks = -(-n_tokens // cap)
    return -(-n_tokens // n_chunks)


def chunked_target_logprobs(
    unembed, hidden_BTD, targets_BT, *, chunk_tokens: int | None = None, vocab: int | None = None
):
    """log softmax(unembed(h))[target] for targets [B, T] or soft targets [B, T, K]."""
    B, T, D = hidden_BTD.shape
    soft = targets_BT.ndim == 3
    N = B * T
    if vocab is None:
        vocab = jax.eval_shape(unembed, jax.ShapeDtypeStruct((1, D), hidden_BTD.dtype)).shape[-1]
    C = chunk_size(N, vocab, chunk_tokens)
    pad = (-N) % C
    h_ND = jnp.pad(hidden_BTD.reshape(N, D), ((0, pad), (0, 0)))
    t_N = targets_BT.reshape(N, -1) if soft else targets_BT.reshape(N, 1)
    t_N = jnp.pad(t_N, ((0, pad), (0, 0)))

    def chunk(args):
        h_CD, t_CK = args
        logits_CV = unembed(h_CD).astype(jnp.float32)
        lse_C = jax.nn.logsumexp(logits_CV, axis=-1)
        return jnp.take_along_axis(logits_CV, t_CK, axis=-1) - lse_C[:, None]

    if C == N:
        lp = chunk((h_ND, t_N))
    else:
        chunks = (h_ND.reshape(-1, C, D), t_N.reshape(-1, C, t_N.shape[-1]))
        lp = jax.lax.map(jax.checkpoint(chunk), chunks)
    lp = lp.reshape(N + pad, -1)[:N]
    return lp.reshape(B, T, -1) if soft else lp.reshape(B, T)


def target_logprobs(model, batch, *, remat: bool = False, chunk_tokens: int | None = None):
    """Per-position log p(target) [B, T] (or [B, T, K]) of a `Batch` under `model`.

    With `batch.score_idx_BP` non-empty, only those slots are unembedded (gathered, scored and
    scattered back); every other slot gets 0. The losses never read those slots (see
    `losses.positions_read`), and the unembedding is a fifth of a small model's forward.
    """
    hidden_BTD = model(batch.tokens_BT, batch.positions_BT, batch.segment_ids_BT, remat=remat)
    idx_BP = batch.score_idx_BP
    targets = batch.targets_BT
    if idx_BP.shape[1] == 0:
        return chunked_target_logprobs(
            model.unembed, hidden_BTD, targets, chunk_tokens=chunk_tokens, vocab=model.config.vocab_size
        )
    # Padding slots hold T: gathered clipped (a real slot, scored for nothing), dropped on scatter.
    h_BPD = jnp.take_along_axis(hidden_BTD, idx_BP[:, :, None], axis=1, mode="clip")
    t_idx = idx_BP[:, :, None] if targets.ndim == 3 else idx_BP
    lp_BP = chunked_target_logprobs(
        model.unembed,
        h_BPD,
        jnp.take_along_axis(targets, t_idx, axis=1, mode="clip"),
        chunk_tokens=chunk_tokens,
        vocab=model.config.vocab_size,
    )
    rows_B1 = jnp.arange(idx_BP.shape[0])[:, None]
    return jnp.zeros(targets.shape, lp_BP.dtype).at[rows_B1, idx_BP].set(lp_BP, mode="drop")
