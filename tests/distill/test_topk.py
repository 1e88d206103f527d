"""Chunked top-K log-probs and the renormalised top-K soft targets, against plain numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.core.topk import chunked_topk_logprobs
from jaxcook.distill.off_policy import topk_soft_targets


def numpy_topk(h_BTD, W_DV, k):
    logits = (h_BTD @ W_DV).astype(np.float64)
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))  # log softmax
    ids = np.argsort(-logp, axis=-1, kind="stable")[..., :k]
    return ids, np.take_along_axis(logp, ids, axis=-1)


@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, 1024])  # 7 does not divide B*T = 2*5: padding
def test_topk_matches_numpy(chunk_tokens):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 5, 8)).astype(np.float32)
    W = rng.normal(size=(8, 50)).astype(np.float32)
    ids, lp = chunked_topk_logprobs(
        lambda x: x @ jnp.asarray(W), jnp.asarray(h), 6, chunk_tokens=chunk_tokens
    )
    ref_ids, ref_lp = numpy_topk(h, W, 6)
    assert ids.shape == lp.shape == (2, 5, 6) and ids.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ids), ref_ids)
    np.testing.assert_allclose(np.asarray(lp), ref_lp, atol=1e-5)


def test_topk_with_k_equal_vocab_is_the_whole_distribution():
    rng = np.random.default_rng(1)
    h, W = rng.normal(size=(1, 3, 4)), rng.normal(size=(4, 9))
    _, lp = chunked_topk_logprobs(lambda x: x @ jnp.asarray(W, jnp.float32), jnp.asarray(h, jnp.float32), 9)
    np.testing.assert_allclose(np.exp(np.asarray(lp)).sum(-1), 1.0, atol=1e-5)


def test_soft_targets_hand_computed():
    # log-probs ln(0.3), ln(0.1): renormalised over the top 2 -> 0.75, 0.25; times the weight 0.5
    ids, w = topk_soft_targets([[4, 9], [1, 2]], np.log([[0.3, 0.1], [0.6, 0.2]]), [0.5, 0.0])
    np.testing.assert_array_equal(ids, [[4, 9], [1, 2]])
    np.testing.assert_allclose(w, [[0.375, 0.125], [0.0, 0.0]], atol=1e-7)


def test_soft_targets_match_plain_loops():
    rng = np.random.default_rng(2)
    N, K = 6, 5
    lp = np.log(rng.dirichlet(np.ones(40), size=N)[:, :K])
    ids = rng.integers(0, 40, size=(N, K))
    weights = np.array([0.0, 1.0, 0.2, 0.0, 0.5, 1.0])
    out_ids, out_w = topk_soft_targets(ids, lp, weights)
    for n in range(N):
        total = sum(np.exp(lp[n, j]) for j in range(K))
        for k in range(K):
            expected = weights[n] * np.exp(lp[n, k]) / total if weights[n] != 0 else 0.0
            assert out_w[n, k] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert out_ids.dtype == np.int32 and out_w.dtype == np.float32
    np.testing.assert_allclose(out_w.sum(-1), weights, rtol=1e-6)  # each row keeps its weight


def test_soft_targets_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"expected \[N, K\], \[N, K\], \[N\]"):
        topk_soft_targets(np.zeros((3, 2)), np.zeros((3, 2)), np.ones(4))
