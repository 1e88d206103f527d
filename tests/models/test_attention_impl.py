"""The XLA attention in query blocks equals one block and `jax.nn.dot_product_attention` (its XLA
implementation, which runs on CPU) under the same causal + segment mask, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcook.models import attention


def inputs(B=2, T=256, H=4, K=2, D=8, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(B, T, H, D)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(B, T, K, D)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(B, T, K, D)), jnp.float32)
    # row 0: two packed sequences; row 1: one sequence then 40 padding slots (segment 0)
    seg = np.ones((B, T), np.int32)
    seg[0, 100:] = 2
    seg[1, T - 40 :] = 0
    slots = jnp.arange(T)
    mask = attention.attention_mask(slots, slots, jnp.asarray(seg), jnp.asarray(seg))
    return q, k, v, mask, jnp.asarray(seg != 0)


def test_sequences_up_to_the_block_are_one_block():
    # No loop over query blocks where the whole [T, S] scores are small (T = 256 used to run as a
    # loop of two 128-query blocks, each rematerialised on its own).
    assert attention._query_chunk(256) == 256 and attention._query_chunk(attention.QUERY_CHUNK) == 512
    assert attention._query_chunk(1024) == 512 and attention._query_chunk(1536) == 512
    assert attention._query_chunk(1000) == 1000  # no power-of-two block >= 64 divides it


def test_query_blocks_and_dot_product_attention_match(monkeypatch):
    q, k, v, mask, real_BT = inputs()
    monkeypatch.setattr(attention, "QUERY_CHUNK", 64)
    assert attention._query_chunk(256) == 64  # 4 blocks
    w = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32) * real_BT[:, :, None, None]

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v, mask) * w)

    one_block = attention._attend
    blocks = attention.xla_attention
    dpa = lambda q, k, v, m: attention.dpa_attention(q, k, v, m, implementation="xla")
    want = one_block(q, k, v, mask)
    real = np.asarray(real_BT)
    for fn in (blocks, dpa):
        got = jax.jit(fn)(q, k, v, mask)
        np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-5, atol=1e-5)
    grads_want = jax.grad(loss(one_block), argnums=(0, 1, 2))(q, k, v)
    for fn in (blocks, dpa):
        grads = jax.jit(jax.grad(loss(fn), argnums=(0, 1, 2)))(q, k, v)
        for g, gw in zip(grads, grads_want):
            np.testing.assert_allclose(g, gw, rtol=1e-4, atol=1e-5)


def test_cpu_uses_the_xla_path(monkeypatch):
    q, k, v, mask, _ = inputs(T=64)
    called = []
    monkeypatch.setattr(attention, "dpa_attention", lambda *a, **kw: called.append(1))
    out = attention.gqa_attention(q, k, v, mask)
    assert jax.default_backend() == "cpu" and not called
    np.testing.assert_allclose(out, attention._attend(q, k, v, mask), rtol=1e-6)
