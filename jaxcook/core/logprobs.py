"""Target log-probabilities without full-vocabulary logits for the whole batch.

The final hidden states are cut into chunks of at most `chunk_tokens` positions (by default as
many as keep one chunk's f32 logits under `CHUNK_LOGIT_BYTES`); each chunk is unembedded to f32
logits [C, V], reduced to the log-probabilities of its targets, and discarded. With several
chunks the chunk body is rematerialised in the backward pass, so peak memory holds one chunk's
logits (C x V x 4 bytes), not the batch's (B x T x V x 4 bytes). A batch that fits in one
chunk is not rematerialised: recomputing its logits would cost an extra unembedding and save
nothing. On a mesh the logits are vocabulary-parallel (split over `tensor`): log-sum-exp and
the target pick reduce per device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcook.engine.sharding import constrain

CHUNK_LOGIT_BYTES = 512 * 2**20


def chunk_size(n_tokens: int, vocab: int, chunk_tokens: int | None = None) -> int:
    """Positions per chunk: the fewest chunks of at most `chunk_tokens` positions (default: one
    chunk's f32 logits within `CHUNK_LOGIT_BYTES`), evened out so padding stays under one
    position per chunk."""
    cap = chunk_tokens or max(1, CHUNK_LOGIT_BYTES // (4 * vocab))
    n_chunks = -(-n_tokens // cap)
    return -(-n_tokens // n_chunks)


def _target_logp(logits_XV, t_XK, soft: bool):
    """log softmax(logits)[targets] for [..., V] logits and [..., K] targets, in f32.

    Hard targets are picked by a masked sum over the vocabulary rather than a gather, so with a
    vocabulary split over `tensor` every device reduces its own slice (no all-gather of logits).
    """
    lse_X = jax.nn.logsumexp(logits_XV, axis=-1)
    if soft:
        picked_XK = jnp.take_along_axis(logits_XV, t_XK, axis=-1)
    else:
        vocab_V = jnp.arange(logits_XV.shape[-1], dtype=t_XK.dtype)
        picked_XK = jnp.sum(jnp.where(vocab_V == t_XK, logits_XV, 0.0), axis=-1, keepdims=True)
    return picked_XK - lse_X[..., None]


def chunked_target_logprobs(
    unembed, hidden_BTD, targets_BT, *, chunk_tokens: int | None = None, vocab: int | None = None
):
    """log softmax(unembed(h))[target] for targets [B, T] or soft targets [B, T, K].

    Chunks cut the sequence axis (every chunk holds all B rows, so rows stay split over the
    batch devices and the logits over `tensor`); when a chunk would hold less than one position
    per row, they cut the flattened B*T positions instead.
    """
    B, T, D = hidden_BTD.shape
    soft = targets_BT.ndim == 3
    N = B * T
    if vocab is None:
        vocab = jax.eval_shape(unembed, jax.ShapeDtypeStruct((1, D), hidden_BTD.dtype)).shape[-1]
    C = chunk_size(N, vocab, chunk_tokens)
    n_chunks = -(-N // C)
    t_BTK = targets_BT if soft else targets_BT[..., None]

    def chunk(args):
        h_XD, t_XK = args
        logits_XV = constrain(
            unembed(h_XD).astype(jnp.float32), ("batch",) + (None,) * (h_XD.ndim - 2) + ("vocab",)
        )
        return _target_logp(logits_XV, t_XK, soft)

    if n_chunks == 1:
        lp_BTK = chunk((hidden_BTD, t_BTK))
    elif T >= n_chunks:  # chunks of Tc positions of every row: [n, B, Tc, D]
        Tc = -(-T // n_chunks)
        pad = n_chunks * Tc - T
        h = jnp.pad(hidden_BTD, ((0, 0), (0, pad), (0, 0))).reshape(B, n_chunks, Tc, D)
        t = jnp.pad(t_BTK, ((0, 0), (0, pad), (0, 0))).reshape(B, n_chunks, Tc, -1)
        lp = jax.lax.map(jax.checkpoint(chunk), (h.swapaxes(0, 1), t.swapaxes(0, 1)))  # [n, B, Tc, K]
        lp_BTK = lp.swapaxes(0, 1).reshape(B, n_chunks * Tc, -1)[:, :T]
    else:  # fewer positions per row than chunks: cut the flattened positions
        pad = (-N) % C
        h_ND = jnp.pad(hidden_BTD.reshape(N, D), ((0, pad), (0, 0)))
        t_NK = jnp.pad(t_BTK.reshape(N, -1), ((0, pad), (0, 0)))
        chunks = (h_ND.reshape(-1, C, D), t_NK.reshape(-1, C, t_NK.shape[-1]))
        lp_BTK = jax.lax.map(jax.checkpoint(chunk), chunks).reshape(N + pad, -1)[:N].reshape(B, T, -1)
    return lp_BTK if soft else lp_BTK[..., 0]


def target_logprobs(model, batch, *, remat: bool = False, chunk_tokens: int | None = None):
    """Per-position log p(target) [B, T] (or [B, T, K]) of a `Batch` under `model`.

    With `batch.score_idx_BP` non-empty, only those slots are unembedded (gathered, scored and
    scattered back); every other slot gets 0. The losses never read those slots (see
    `losses.positions_read`), and the unembedding is a fifth of a small model's forward.
    """
    # Shared prefixes (`batching`): branch ids only when the batch has them, so a plain batch
    # traces the same program as before and a model without the argument still runs it.
    shared = {} if batch.branch_ids_BT is None else {"branch_ids_BT": batch.branch_ids_BT}
    hidden_BTD = model(batch.tokens_BT, batch.positions_BT, batch.segment_ids_BT, remat=remat, **shared)
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
