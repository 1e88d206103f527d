"""The grouped bf16 kernel (one library product per expert group of sorted rows): each group's rows
equal a numpy product of the same bf16 operands, with and without the kernel; a Qwen3-MoE model
with `matmul_dtype=bfloat16` runs its experts through it, with the loss and gradients of XLA's
bf16 products, and trains expert adapters."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from jaxcook.kernels import cpu_gemm
from jaxcook.models import grouped
from jaxcook.models.config import MoeConfig
from jaxcook.models.decoder import Decoder
from jaxcook.models.layers import set_matmul_dtype
from tests.engine.tiny import TINY, random_datums

pytestmark = pytest.mark.slow  # loads oneMKL / oneDNN: in the kernels' own process (`.ci/run`)

SIZES = np.array([10, 0, 23, 5, 20], np.int32)  # an empty group; 58 of 70 rows: 12 trailing rows
R, K, N = 70, 40, 24


def _bf16(rng, shape):
    return np.asarray(rng.standard_normal(shape), ml_dtypes.bfloat16)


def _per_group(x, w, trans_w=False):
    out, row = np.zeros((R, w.shape[1] if trans_w else w.shape[2]), np.float32), 0
    for e, m in enumerate(SIZES):
        w_e = w[e].astype(np.float32)
        out[row : row + m] = x[row : row + m].astype(np.float32) @ (w_e.T if trans_w else w_e)
        row += m
    return out


def _per_group_tn(x, dy):
    out, row = np.zeros((len(SIZES), K, N), np.float32), 0
    for e, m in enumerate(SIZES):
        out[e] = x[row : row + m].astype(np.float32).T @ dy[row : row + m].astype(np.float32)
        row += m
    return out


@pytest.mark.parametrize("kernel", [True, False])
def test_grouped_products_equal_numpy_per_group(kernel, monkeypatch):
    if kernel and not cpu_gemm.kernel_in_use():
        pytest.skip(f"no bf16 kernel here: {cpu_gemm.kernel_status()}")
    if not kernel:
        monkeypatch.setattr(cpu_gemm, "_use_kernel", lambda: False)
    rng = np.random.default_rng(0)
    x, dy = _bf16(rng, (R, K)), _bf16(rng, (R, N))
    w = _bf16(rng, (len(SIZES), K, N))
    w_t = np.ascontiguousarray(np.swapaxes(w, 1, 2))
    y = jax.jit(cpu_gemm.grouped_gemm)(x, w, SIZES)
    assert y.dtype == jnp.float32 and y.shape == (R, N)
    np.testing.assert_allclose(np.asarray(y), _per_group(x, w), rtol=1e-5, atol=1e-4)
    assert not np.asarray(y)[SIZES.sum() :].any()  # rows past the groups are zero
    y_t = jax.jit(lambda *a: cpu_gemm.grouped_gemm(*a, trans_w=True))(x, w_t, SIZES)
    np.testing.assert_allclose(np.asarray(y_t), _per_group(x, w_t, True), rtol=1e-5, atol=1e-4)
    dw = jax.jit(cpu_gemm.grouped_gemm_tn)(x, dy, SIZES)
    np.testing.assert_allclose(np.asarray(dw), _per_group_tn(x, dy), rtol=1e-5, atol=1e-3)
    assert not np.asarray(dw)[1].any()  # the empty group's gradient


def test_group_sizes_past_the_rows_are_an_error():
    if not cpu_gemm.kernel_in_use():
        pytest.skip(f"no bf16 kernel here: {cpu_gemm.kernel_status()}")
    x, w = jnp.ones((8, 4), jnp.bfloat16), jnp.ones((2, 4, 3), jnp.bfloat16)
    with pytest.raises(Exception, match="group sizes exceed the rows"):
        jax.block_until_ready(cpu_gemm.grouped_gemm(x, w, jnp.array([5, 4], jnp.int32)))


def _routed(x_ND, w_EIO, idx_NK, bf16):
    """x @ w[idx] through the MoE's layout: one product per (token, choice), [N, K, out]."""
    kernel = bf16 and grouped.uses_kernel(x_ND, "blocks")
    d = grouped.plan(idx_NK, w_EIO.shape[0], block=1 if kernel else None)
    return grouped.combine(grouped.grouped_matmul(grouped.dispatch(x_ND, d), w_EIO, d, "blocks", bf16), d)


def test_bf16_grouped_matmul_and_its_gradients_match_autodiff_of_the_rounded_formula():
    rng = np.random.default_rng(1)
    Nt, Kc, E, D, F = 96, 2, 8, 16, 12
    x = jnp.asarray(rng.normal(size=(Nt, D)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(E, D, F)), jnp.float32)
    idx = jnp.asarray(np.stack([rng.permutation(E)[:Kc] for _ in range(Nt)]))
    c = jnp.asarray(rng.normal(size=(Nt, Kc, F)), jnp.float32)

    def plain(x, w):  # per (token, choice), from bf16-rounded operands, f32 accumulation
        xb, wb = (a.astype(jnp.bfloat16).astype(jnp.float32) for a in (x, w))
        return jnp.einsum("nd,nkdf->nkf", xb, wb[idx], precision="highest")

    assert grouped.uses_kernel(x, "blocks") == cpu_gemm.kernel_in_use()
    got = jax.jit(lambda x, w: _routed(x, w, idx, True))(x, w)
    np.testing.assert_allclose(np.asarray(got), np.asarray(plain(x, w)), rtol=1e-5, atol=1e-4)
    want_g = jax.grad(lambda x, w: jnp.sum(c * plain(x, w)), argnums=(0, 1))(x, w)
    got_g = jax.jit(jax.grad(lambda x, w: jnp.sum(c * _routed(x, w, idx, True)), argnums=(0, 1)))(x, w)
    for g, want in zip(got_g, want_g, strict=True):
        assert g.dtype == jnp.float32  # the kernel's gradient is not rounded to bf16
        np.testing.assert_allclose(np.asarray(g), np.asarray(want), rtol=2e-2, atol=5e-2)  # dy in bf16
    # only the differentiated operand's product runs: dx alone, then dw alone, each equal
    dx = jax.jit(jax.grad(lambda x: jnp.sum(c * _routed(x, w, idx, True))))(x)
    dw = jax.jit(jax.grad(lambda w: jnp.sum(c * _routed(x, w, idx, True))))(w)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(got_g[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(got_g[1]), rtol=1e-6)


MOE = dataclasses.replace(
    TINY,
    model_type="qwen3_moe",
    moe=MoeConfig(num_experts=8, top_k=2, intermediate_size=24, norm_topk_prob=True),
)


def _batch():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, MOE.vocab_size, (2, 24)))
    return tokens, jnp.broadcast_to(jnp.arange(24), (2, 24)), jnp.ones((2, 24), jnp.int32)


def test_bf16_moe_model_uses_the_kernel_and_matches_xlas_bf16_products(monkeypatch):
    if not cpu_gemm.kernel_in_use():
        pytest.skip(f"no bf16 kernel here: {cpu_gemm.kernel_status()}")
    tokens, pos, seg = _batch()
    model = Decoder(MOE)
    graphdef, params = nnx.split(model)

    def loss(params, gd):
        m = nnx.merge(gd, params)
        return jnp.mean(jax.nn.logsumexp(m.unembed(m(tokens, pos, seg)), -1))

    want_f32 = loss(params, graphdef)
    bf16_def, _ = nnx.split(set_matmul_dtype(model, "bfloat16"))
    kernel = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    assert cpu_gemm.GROUPED_TARGET in kernel.lower(params, bf16_def).as_text()
    got, got_g = kernel(params, bf16_def)
    monkeypatch.setattr(cpu_gemm, "_use_kernel", lambda: False)  # the same bf16 products in XLA
    xla = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    assert cpu_gemm.GROUPED_TARGET not in xla.lower(params, bf16_def).as_text()
    want, want_g = xla(params, bf16_def)
    np.testing.assert_allclose(got, want_f32, rtol=1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for name in ("gate_proj", "up_proj", "down_proj"):
        g = got_g["layers"]["mlp"]["experts"][name]["kernel"][...]
        w = want_g["layers"]["mlp"]["experts"][name]["kernel"][...]
        assert float(jnp.abs(g).max()) > 0
        # the two differ in where dy is rounded to bf16, not in what is computed (measured: 0.5%;
        # both are ~10% from the f32 gradient on this tiny random model's small expert gradients)
        rel = float(jnp.linalg.norm(g - w) / jnp.linalg.norm(w))
        assert rel < 0.02, (name, rel)


def test_bf16_moe_lora_training_trains_the_expert_adapters():
    from jaxcook.engine.training_client import LocalTrainingClient
    from jaxcook.lora import LoraConfig
    from jaxcook.types import AdamParams

    lora = LoraConfig(rank=4)
    model = set_matmul_dtype(Decoder(MOE, lora=lora, rngs=nnx.Rngs(params=0, lora=1)), "bfloat16")
    client = LocalTrainingClient(model, lora=lora)
    data = random_datums(4, seed=1)
    losses = []
    for _ in range(8):
        out = client.forward_backward(data).result()
        client.optim_step(AdamParams(learning_rate=3e-2)).result()
        losses.append(out.metrics["loss:sum"])
    assert losses[-1] < 0.8 * losses[0], losses
    trained = nnx.merge(client.graphdef, client.snapshot_params().result(), client.frozen)
    lora_b = trained.layers.mlp.experts.down_proj.lora_b[...]
    assert float(jnp.abs(lora_b).max()) > 0  # the experts' adapters were trained
    hlo = jax.jit(lambda m: m(*_batch()).sum()).lower(trained).as_text()
    assert (cpu_gemm.GROUPED_TARGET in hlo) == cpu_gemm.kernel_in_use()  # and ran on the kernel


def test_bf16_moe_sampler_logprobs_match_its_own_scoring():
    # Decode steps route a few rows (XLA's products of the bf16-rounded operands); scoring the
    # whole sequence routes many (the kernel): the same numbers up to f32 summation order.
    from jaxcook.sampling import LocalSamplingClient
    from jaxcook.types import ModelInput, SamplingParams
    from tests.sampling.tiny import CharTokenizer

    tok = CharTokenizer()
    moe = dataclasses.replace(MOE, vocab_size=TINY.vocab_size)
    client = LocalSamplingClient.from_model(set_matmul_dtype(Decoder(moe), "bfloat16"), tok)
    prompt = ModelInput.from_ints(tok.encode("Hello, experts of the sampler"))
    seq = client.sample(prompt, 2, SamplingParams(max_tokens=8, seed=3)).result().sequences[0]
    full = ModelInput.from_ints(prompt.to_ints() + seq.tokens)
    scored = client.compute_logprobs(full).result()[prompt.length :]
    np.testing.assert_allclose(seq.logprobs, scored, atol=2e-3)
