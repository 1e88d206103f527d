"""Choosing the next token of each row from its logits: temperature, top-k, top-p, greedy.

Everything here is a pure function of arrays, built for a CPU-friendly decode step: no
full-vocabulary sort (XLA's CPU sort of [R, V] costs more than the whole model step) and one
uniform draw per row per step (not V Gumbel draws).

- Temperature `T > 0` samples from softmax(logits / T); `T == 0` is greedy (argmax, ties to the
  lowest id).
- top-k keeps the tokens whose probability is at least the k-th largest; top-p (after top-k,
  on the renormalised distribution, as vLLM does) keeps the smallest set of most likely tokens
  whose mass reaches `p`. Both thresholds are found exactly by a 31-step bisection over the
  bit patterns of positive float32 probabilities (monotone as integers). Tokens tied with the
  threshold are all kept.
- The draw is inverse-CDF sampling with a two-level cumulative sum (blocks of 128 tokens), which
  is linear in V (XLA's CPU cumsum over 49k entries is not).

Two log-probabilities come back for the chosen token: `logprob`, the log softmax of the raw
logits (temperature 1, no filtering) — the quantity the trainer computes, so the on-policy
importance ratio is 1 — and `sampling_logprob`, its log-probability under the distribution it
was actually drawn from (0 for greedy rows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 128  # tokens per block of the two-level cumulative sum


def _largest_threshold(probs_RV: jnp.ndarray, ok) -> jnp.ndarray:
    """Per row, the largest float32 `tau > 0` with `ok(probs_RV >= tau)` (or 0 if none).

    `ok(keep_RV) -> bool[R]` must be monotone: true for small tau, false past some point.
    Positive float32s order like their int32 bit patterns, so setting bits from the most
    significant down finds the exact threshold (a probability value itself) in 31 steps.
    """
    R = probs_RV.shape[0]

    def body(i, bits_R):
        candidate_R = bits_R | (1 << (30 - i))
        tau_R = jax.lax.bitcast_convert_type(candidate_R, jnp.float32)
        return jnp.where(ok(probs_RV >= tau_R[:, None]), candidate_R, bits_R)

    bits_R = jax.lax.fori_loop(0, 31, body, jnp.zeros((R,), jnp.int32))
    return jax.lax.bitcast_convert_type(bits_R, jnp.float32)


def filter_top_k_top_p(probs_RV: jnp.ndarray, top_k_R: jnp.ndarray, top_p_R: jnp.ndarray) -> jnp.ndarray:
    """Zero the probabilities outside top-k (`k <= 0`: off) then outside top-p (`p >= 1`: off)."""
    V = probs_RV.shape[-1]
    k_R = jnp.where(top_k_R > 0, jnp.minimum(top_k_R, V), V)
    tau_k_R = _largest_threshold(probs_RV, lambda keep: keep.sum(-1) >= k_R)
    probs_RV = jnp.where(probs_RV >= tau_k_R[:, None], probs_RV, 0.0)
    target_R = jnp.minimum(top_p_R, 1.0) * probs_RV.sum(-1)
    tau_p_R = _largest_threshold(probs_RV, lambda keep: jnp.where(keep, probs_RV, 0.0).sum(-1) >= target_R)
    tau_p_R = jnp.where(top_p_R < 1.0, tau_p_R, 0.0)
    return jnp.where(probs_RV >= tau_p_R[:, None], probs_RV, 0.0)


def inverse_cdf_sample(weights_RV: jnp.ndarray, u_R: jnp.ndarray) -> jnp.ndarray:
    """Index i of each row drawn with probability weights[i] / sum(weights), from u ~ U[0, 1).

    Picks the first i whose running sum exceeds u * total, so a zero-weight entry is never
    picked. Two levels: find the block of 128 (cumsum over V/128 block sums), then the entry
    in it (cumsum over 128).
    """
    R, V = weights_RV.shape
    pad = (-V) % BLOCK
    w_RNB = jnp.pad(weights_RV, ((0, 0), (0, pad))).reshape(R, -1, BLOCK)  # N = ceil(V / BLOCK) blocks
    block_sum_RN = w_RNB.sum(-1)
    block_cdf_RN = jnp.cumsum(block_sum_RN, axis=-1)
    x_R = u_R * block_cdf_RN[:, -1]
    n_R = jnp.minimum((block_cdf_RN < x_R[:, None]).sum(-1), w_RNB.shape[1] - 1)
    before_R = jnp.take_along_axis(block_cdf_RN - block_sum_RN, n_R[:, None], axis=-1)[:, 0]
    w_RB = jnp.take_along_axis(w_RNB, n_R[:, None, None], axis=1)[:, 0]
    inner_cdf_RB = jnp.cumsum(w_RB, axis=-1)
    b_R = jnp.minimum((inner_cdf_RB < (x_R - before_R)[:, None]).sum(-1), BLOCK - 1)
    index_R = jnp.minimum(n_R * BLOCK + b_R, V - 1)
    # Float edge (u * total rounding onto a block boundary): never return a zero-weight entry.
    chosen_R = jnp.take_along_axis(weights_RV, index_R[:, None], axis=-1)[:, 0]
    return jnp.where(chosen_R > 0, index_R, jnp.argmax(weights_RV, axis=-1)).astype(jnp.int32)


def sample_tokens(
    logits_RV: jnp.ndarray,
    key_R: jax.Array,
    temperature_R: jnp.ndarray,
    top_k_R: jnp.ndarray,
    top_p_R: jnp.ndarray,
    *,
    filtered: bool,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """`(token_R, logprob_R, sampling_logprob_R)` for one step; `filtered` (static) turns on
    top-k / top-p (off, they cost nothing)."""
    logits_RV = logits_RV.astype(jnp.float32)
    lse_R = jax.nn.logsumexp(logits_RV, axis=-1)
    greedy_R = temperature_R <= 0.0
    scaled_RV = logits_RV / jnp.where(greedy_R, 1.0, temperature_R)[:, None]
    max_R = scaled_RV.max(-1)
    probs_RV = jnp.exp(scaled_RV - max_R[:, None])  # unnormalised, max entry 1
    if filtered:
        probs_RV = filter_top_k_top_p(probs_RV, top_k_R, top_p_R)
    u_R = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(key_R)
    token_R = inverse_cdf_sample(probs_RV, u_R)
    token_R = jnp.where(greedy_R, jnp.argmax(logits_RV, axis=-1).astype(jnp.int32), token_R)
    picked_R = jnp.take_along_axis(logits_RV, token_R[:, None], axis=-1)[:, 0]
    logprob_R = picked_R - lse_R
    p_R = jnp.take_along_axis(probs_RV, token_R[:, None], axis=-1)[:, 0]
    sampling_logprob_R = jnp.where(greedy_R, 0.0, jnp.log(p_R) - jnp.log(probs_RV.sum(-1)))
    return token_R, logprob_R, sampling_logprob_R
