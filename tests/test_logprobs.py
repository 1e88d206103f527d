"""Chunked target log-probs equal the full-logits computation, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.core.logprobs import chunk_size, chunked_target_logprobs


def _full(W, h, t):
    logp = jax.nn.log_softmax(h @ W, axis=-1)
    if t.ndim == 3:
        return jnp.take_along_axis(logp, t, axis=-1)
    return jnp.take_along_axis(logp, t[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("chunk_tokens", [None, 1, 4, 7, 10])  # 7 leaves padding; None/10: one chunk
@pytest.mark.parametrize("soft", [False, True])
def test_chunked_equals_full_logits_with_gradients(chunk_tokens, soft):
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.normal(size=(8, 13)), jnp.float32)
    h = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 13, size=(2, 5, 3) if soft else (2, 5)))
    weights = jnp.asarray(rng.normal(size=t.shape), jnp.float32)

    def loss(fn):
        return lambda W, h: jnp.sum(fn(W, h) * weights)

    chunked = lambda W, h: chunked_target_logprobs(lambda x: x @ W, h, t, chunk_tokens=chunk_tokens)
    np.testing.assert_allclose(chunked(W, h), _full(W, h, t), rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(loss(chunked), argnums=(0, 1)))(W, h)
    want = jax.grad(loss(lambda W, h: _full(W, h, t)), argnums=(0, 1))(W, h)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_chunk_size_bounds_logit_memory_and_padding():
    # SmolLM2 (V = 49152): 2730 positions fit 512 MiB of f32 logits, so 8 x 256 is one chunk.
    assert chunk_size(2048, 49152) == 2048
    assert chunk_size(6144, 49152) == 2048  # three even chunks, no padding
    assert chunk_size(2731, 49152) == 1366  # two chunks, one padded position
    assert chunk_size(2048, 151936) == 683  # a Qwen vocabulary: 883 fit, so three chunks
    assert chunk_size(10, 13, chunk_tokens=4) == 4
