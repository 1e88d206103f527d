"""Token choice against numpy references: inverse-CDF draws, top-k / top-p sets, frequencies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.sampling.token_sampling import filter_top_k_top_p, inverse_cdf_sample, sample_tokens


def numpy_top_k_top_p(probs, k, p):
    """Sort-based reference: keep the k most likely (ties at the k-th kept), renormalise, then
    the smallest prefix of the sorted remainder whose mass reaches p (ties at the cut kept)."""
    keep = np.ones_like(probs, bool)
    if k > 0:
        keep &= probs >= np.sort(probs)[::-1][min(k, len(probs)) - 1]
    kept = np.where(keep, probs, 0.0)
    if p < 1.0:
        order = np.sort(kept)[::-1]
        cum = np.cumsum(order)
        n = int(np.searchsorted(cum, p * kept.sum() * (1 - 1e-6)))  # first index reaching the mass
        keep &= probs >= order[n]
    return np.where(keep, probs, 0.0)


def test_inverse_cdf_matches_numpy_searchsorted():
    rng = np.random.default_rng(0)
    V = 300  # not a multiple of the 128-token block: exercises the padding
    w = rng.random((64, V)).astype(np.float32) * (rng.random((64, V)) > 0.3)
    v = 1.0 - rng.random(64).astype(np.float32)
    got = np.asarray(inverse_cdf_sample(jnp.asarray(w), jnp.asarray(v)))
    cdf = np.cumsum(w.astype(np.float64), axis=-1)
    want = [
        int(np.searchsorted(c, vi * c[-1], side="left")) for c, vi in zip(cdf, v)
    ]  # cdf[i-1] < x <= cdf[i]
    assert got.tolist() == want
    assert (w[np.arange(64), got] > 0).all()  # never a zero-weight entry


def test_inverse_cdf_edges_never_pick_a_zero_weight_entry():
    # Zero blocks first and last, v at both ends of (0, 1]: the first / last positive entry.
    w = np.zeros((2, 512), np.float32)
    w[:, 200], w[:, 300] = 1.0, 2.0
    got = np.asarray(inverse_cdf_sample(jnp.asarray(w), jnp.asarray([np.float32(2**-24), 1.0])))
    assert got.tolist() == [200, 300]


@pytest.mark.parametrize("k,p", [(1, 1.0), (5, 1.0), (0, 0.5), (0, 0.9), (20, 0.8), (1000, 0.3), (0, 1.0)])
def test_top_k_top_p_sets_match_sort_reference(k, p):
    rng = np.random.default_rng(k + int(p * 10))
    logits = rng.normal(size=(8, 200)).astype(np.float32) * 2
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    got = np.asarray(
        filter_top_k_top_p(jnp.asarray(probs), jnp.full((8,), k, jnp.int32), jnp.full((8,), p, jnp.float32))
    )
    for row in range(8):
        np.testing.assert_array_equal(got[row] > 0, numpy_top_k_top_p(probs[row], k, p) > 0)


def draw(logits, n, temperature=1.0, top_k=0, top_p=1.0, seed=0):
    """n independent draws of one row of logits (one key per draw)."""
    logits_RV = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, len(logits)))
    keys = jax.random.split(jax.random.key(seed), n)
    full = lambda x: jnp.full((n,), x)
    filtered = top_k > 0 or top_p < 1.0
    return [
        np.asarray(a)
        for a in sample_tokens(
            logits_RV,
            keys,
            full(temperature),
            full(top_k),
            full(top_p).astype(jnp.float32),
            filtered=filtered,
        )
    ]


def test_frequencies_follow_the_tempered_softmax():
    logits = np.array([2.0, 1.0, 0.0, -1.0, 0.5], np.float32)
    T = 0.7
    probs = np.exp(logits / T) / np.exp(logits / T).sum()
    tokens, logp, sampling_logp = draw(logits, 20000, temperature=T)
    freq = np.bincount(tokens, minlength=5) / len(tokens)
    # 20000 draws: std of a frequency <= sqrt(0.25 / 20000) = 0.0035; 5 sigma = 0.018.
    np.testing.assert_allclose(freq, probs, atol=0.018)
    # logprob: raw log softmax (temperature 1); sampling_logprob: the tempered one.
    np.testing.assert_allclose(logp, (logits - np.log(np.exp(logits).sum()))[tokens], rtol=1e-5)
    np.testing.assert_allclose(sampling_logp, np.log(probs)[tokens], rtol=1e-5)


def test_top_k_draws_only_from_the_top_k_and_renormalises():
    logits = np.array([3.0, 2.5, 2.0, 1.0, 0.0, -1.0], np.float32)
    tokens, _, sampling_logp = draw(logits, 4000, top_k=2)
    assert set(tokens.tolist()) == {0, 1}
    top2 = np.exp(logits[:2]) / np.exp(logits[:2]).sum()  # renormalised over the two kept
    np.testing.assert_allclose(sampling_logp, np.log(top2)[tokens], rtol=1e-5)


def test_top_p_draws_from_the_nucleus():
    probs = np.array([0.5, 0.3, 0.15, 0.05], np.float32)
    # p = 0.75: 0.5 < 0.75 <= 0.5 + 0.3, so the nucleus is {0, 1}.
    tokens, _, _ = draw(np.log(probs), 4000, top_p=0.75)
    assert set(tokens.tolist()) == {0, 1}


def test_temperature_zero_is_argmax_with_zero_sampling_logprob():
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    tokens, logp, sampling_logp = draw(logits, 50, temperature=0.0)
    assert (tokens == 1).all() and (sampling_logp == 0).all()
    np.testing.assert_allclose(logp, logits[1] - np.log(np.exp(logits).sum()), rtol=1e-6)
