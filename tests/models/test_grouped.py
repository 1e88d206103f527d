"""The grouped expert matmul against a per-token numpy reference; `ragged_dot` equals the block
layout under jit and grad; the layout's size bound holds for skewed routings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.models import grouped


def reference(x_ND, w_EIO, idx_NK):
    """y[n, k] = x[n] @ w[idx[n, k]], one token at a time."""
    N, K = idx_NK.shape
    return np.stack([np.stack([x_ND[n] @ w_EIO[idx_NK[n, k]] for k in range(K)]) for n in range(N)])


def grouped_apply(x_ND, w_EIO, idx_NK, impl):
    d = grouped.plan(idx_NK, w_EIO.shape[0])
    return grouped.combine(grouped.grouped_matmul(grouped.dispatch(x_ND, d), w_EIO, d, impl), d)


@pytest.mark.parametrize("skew", ["uniform", "one_expert", "few_tokens"])
def test_grouped_matmul_equals_per_token_reference(skew):
    rng = np.random.default_rng(0)
    N, K, E, D, F = (3, 2, 8, 16, 12) if skew == "few_tokens" else (96, 2, 8, 16, 12)
    x = rng.normal(size=(N, D)).astype(np.float32)
    w = rng.normal(size=(E, D, F)).astype(np.float32)
    idx = np.stack([rng.permutation(E)[:K] for _ in range(N)])
    if skew == "one_expert":  # every token's first choice is expert 5: a group of N rows
        idx[:, 0] = 5
        idx[:, 1] = np.where(idx[:, 1] == 5, 6, idx[:, 1])
    want = reference(x, w, idx)
    for impl in ("blocks", "ragged"):
        got = jax.jit(grouped_apply, static_argnums=3)(jnp.asarray(x), jnp.asarray(w), jnp.asarray(idx), impl)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    d = grouped.plan(jnp.asarray(idx), E)
    assert d.src_R.shape[0] <= N * K + E * (d.block - 1)  # padding bound
    assert d.src_R.shape[0] >= int(np.asarray(d.group_sizes_E).sum())  # every group fits


def test_blocks_and_ragged_dot_have_equal_gradients():
    rng = np.random.default_rng(1)
    N, K, E, D, F = 64, 2, 4, 8, 6
    x = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(E, D, F)), jnp.float32)
    idx = jnp.asarray(np.stack([rng.permutation(E)[:K] for _ in range(N)]))
    c = jnp.asarray(rng.normal(size=(N, K, F)), jnp.float32)

    def loss(x, w, impl):
        return jnp.sum(grouped_apply(x, w, idx, impl) * c)

    g_blocks = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x, w, "blocks")
    g_ragged = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x, w, "ragged")
    # d/dw[e] = sum over rows routed to e of x^T c: the numpy reference
    want_w = np.zeros((E, D, F), np.float32)
    for n in range(N):
        for k in range(K):
            want_w[int(idx[n, k])] += np.outer(np.asarray(x[n]), np.asarray(c[n, k]))
    for g in (g_blocks, g_ragged):
        np.testing.assert_allclose(np.asarray(g[1]), want_w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(g_blocks[0]), np.asarray(g_ragged[0]), rtol=1e-5, atol=1e-5)
