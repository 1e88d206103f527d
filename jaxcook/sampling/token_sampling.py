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


def first_argmax(x_RV: jnp.ndarray) -> jnp.ndarray:
    """`argmax(x, -1)` (ties to the lowest index) as two plain reductions: XLA's CPU argmax
    (a variadic reduce) is ~8x slower over a 49k vocabulary."""
    max_R1 = x_RV.max(-1, keepdims=True)
    iota_RV = jax.lax.broadcasted_iota(jnp.int32, x_RV.shape, 1)
    return jnp.min(jnp.where(x_RV == max_R1, iota_RV, x_RV.shape[-1]), axis=-1)


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


def inverse_cdf_sample(weights_RV: jnp.ndarray, v_R: jnp.ndarray) -> jnp.ndarray:
    """Index i of each row drawn with probability weights[i] / sum(weights), from v ~ U(0, 1]:
    the i with cdf[i-1] < v * total <= cdf[i], so a zero-weight entry is never picked.

    Two levels: find the block of 128 (cumsum over V/128 block sums), then the entry in it
    (cumsum over 128). The target inside the block is clamped into (0, block total], so float
    rounding between the levels cannot land on a zero-weight entry either.
    """
    R, V = weights_RV.shape
    pad = (-V) % BLOCK
    w_RNB = jnp.pad(weights_RV, ((0, 0), (0, pad))).reshape(R, -1, BLOCK)  # N = ceil(V / BLOCK) blocks
    block_sum_RN = w_RNB.sum(-1)
    block_cdf_RN = jnp.cumsum(block_sum_RN, axis=-1)
    x_R = v_R * block_cdf_RN[:, -1]
    n_R = jnp.minimum((block_cdf_RN < x_R[:, None]).sum(-1), w_RNB.shape[1] - 1)
    before_R = jnp.take_along_axis(block_cdf_RN - block_sum_RN, n_R[:, None], axis=-1)[:, 0]
    w_RB = jnp.take_along_axis(w_RNB, n_R[:, None, None], axis=1)[:, 0]
    inner_cdf_RB = jnp.cumsum(w_RB, axis=-1)
    inner_x_R = jnp.clip(x_R - before_R, jnp.finfo(jnp.float32).tiny, inner_cdf_RB[:, -1])
    b_R = jnp.minimum((inner_cdf_RB < inner_x_R[:, None]).sum(-1), BLOCK - 1)
    return jnp.minimum(n_R * BLOCK + b_R, V - 1).astype(jnp.int32)


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
    u_R = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(key_R)  # [0, 1)
    token_R = inverse_cdf_sample(probs_RV, 1.0 - u_R)
    token_R = jnp.where(greedy_R, first_argmax(logits_RV), token_R)
    picked_R = jnp.take_along_axis(logits_RV, token_R[:, None], axis=-1)[:, 0]
    logprob_R = picked_R - lse_R
    p_R = jnp.take_along_axis(probs_RV, token_R[:, None], axis=-1)[:, 0]
    sampling_logprob_R = jnp.where(greedy_R, 0.0, jnp.log(p_R) - jnp.log(probs_RV.sum(-1)))
    return token_R, logprob_R, sampling_logprob_R
