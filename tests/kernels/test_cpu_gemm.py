"""The bf16 kernel products: the FFI call (oneDNN or oneMKL) equals a numpy product of the same bf16-rounded
operands, its gradients equal autodiff of the plain formula, and a model run with bf16 matmuls
stays close to the f32 model and trains."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxcook.kernels import cpu_gemm
from jaxcook.models.fused import lora_matmul, matmul
from jaxcook.models.layers import set_matmul_dtype
from tests.engine.tiny import TINY, random_datums, tiny_model

# Slow, and in a pytest process of its own (`.ci/run`'s slow line): these load oneDNN or oneMKL and
# its OpenMP runtime into the process, which the default suite's tests should not share.
pytestmark = pytest.mark.slow


def _bf16(rng, shape):
    return np.asarray(rng.standard_normal(shape), ml_dtypes.bfloat16)


def test_kernel_is_used_where_the_cpu_has_bf16_units():
    # On an AMX / AVX512-BF16 machine with the `cpu` extra (this project's CI machine) the FFI
    # kernel must be registered, with the first installed library of the processor's order, or
    # every bf16 benchmark silently measures XLA (or the slower library) instead.
    import importlib.metadata as md

    def installed(name):
        try:
            md.distribution(cpu_gemm.LIBRARIES[name].distribution)
        except md.PackageNotFoundError:
            return False
        return True

    flags = open("/proc/cpuinfo").read()
    has_units = " amx_bf16" in flags or " avx512_bf16" in flags
    available = [name for name in cpu_gemm.library_order() if installed(name)]
    if has_units and available:
        assert cpu_gemm.kernel_status() == available[0]
    else:
        assert cpu_gemm.kernel_status().startswith("off")


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_equals_numpy_on_bf16_operands(trans_a, trans_b):
    rng = np.random.default_rng(0)
    m, k, n = 37, 50, 23  # odd sizes: no tile-multiple luck
    a = _bf16(rng, (k, m) if trans_a else (m, k))
    b = _bf16(rng, (n, k) if trans_b else (k, n))
    got = jax.jit(lambda a, b: cpu_gemm.gemm(a, b, trans_a=trans_a, trans_b=trans_b))(a, b)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    want = (a32.T if trans_a else a32) @ (b32.T if trans_b else b32)
    assert got.dtype == jnp.float32 and got.shape == (m, n)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)  # f32 accumulation


def test_gemm_rounds_f32_operands_to_bf16():
    x = np.float32(1 + 2**-10)  # not a bf16 number: rounds to 1.0
    got = cpu_gemm.gemm(jnp.full((1, 1), x), jnp.ones((1, 1)))
    assert float(got[0, 0]) == 1.0


def _plain_bf16(x, kernel):
    return jnp.dot(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def test_bf16_matmul_and_lora_gradients_match_autodiff():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    x, kernel = jax.random.normal(k[0], (2, 5, 6)), jax.random.normal(k[1], (6, 7))
    a, b = jax.random.normal(k[2], (6, 3)), jax.random.normal(k[3], (3, 7))

    def loss(y):
        return jnp.sum(jnp.sin(y))

    want = jax.grad(lambda x, w: loss(_plain_bf16(x, w)), argnums=(0, 1))(x, kernel)
    got = jax.jit(jax.grad(lambda x, w: loss(matmul(x, w, True)), argnums=(0, 1)))(x, kernel)
    for w_, g_ in zip(want, got, strict=True):
        np.testing.assert_allclose(g_, w_, rtol=2e-2, atol=2e-2)  # dy is rounded to bf16 too

    def plain_lora(x, kernel, a, b):
        return _plain_bf16(x, kernel) + ((x @ a) @ b) * 0.5

    want = jax.grad(lambda *z: loss(plain_lora(*z)), argnums=(0, 1, 2, 3))(x, kernel, a, b)
    got = jax.jit(jax.grad(lambda *z: loss(lora_matmul(*z, 0.5, True)), argnums=(0, 1, 2, 3)))(
        x, kernel, a, b
    )
    for w_, g_ in zip(want, got, strict=True):
        np.testing.assert_allclose(g_, w_, rtol=2e-2, atol=5e-2)


def test_dot_differentiates_only_what_is_asked():
    x, w = jnp.ones((4, 3)), jnp.ones((5, 3))
    dx = jax.grad(lambda x: jnp.sum(cpu_gemm.dot(x, w, True)))(x)
    dw = jax.grad(lambda w: jnp.sum(cpu_gemm.dot(x, w, True)))(w)
    np.testing.assert_allclose(dx, np.full((4, 3), 5.0))  # each x feeds 5 outputs with weight 1
    np.testing.assert_allclose(dw, np.full((5, 3), 4.0))  # each w feeds 4 rows with input 1


def test_bf16_model_logits_stay_close_to_f32():
    from jaxcook.lora import LoraConfig

    tokens = jnp.asarray(np.random.default_rng(0).integers(0, TINY.vocab_size, (2, 9)))
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    seg = jnp.ones((2, 9), jnp.int32)
    model = tiny_model(LoraConfig(rank=4))
    want = model.unembed(model(tokens, pos, seg))
    got = set_matmul_dtype(model, "bfloat16").unembed(model(tokens, pos, seg))
    assert not np.array_equal(np.asarray(got), np.asarray(want))  # the bf16 path really ran
    np.testing.assert_allclose(got, want, atol=3e-2)
    with pytest.raises(ValueError, match="model.matmul_dtype='float16'"):
        set_matmul_dtype(model, "float16")


def test_bf16_training_lowers_the_loss():
    from jaxcook.engine.training_client import LocalTrainingClient
    from jaxcook.lora import LoraConfig
    from jaxcook.types import AdamParams

    lora = LoraConfig(rank=4)
    client = LocalTrainingClient(set_matmul_dtype(tiny_model(lora), "bfloat16"), lora=lora)
    data = random_datums(4, seed=1)
    losses = []
    for _ in range(8):
        out = client.forward_backward(data).result()
        client.optim_step(AdamParams(learning_rate=3e-2)).result()
        losses.append(out.metrics["loss:sum"])
    assert losses[-1] < 0.8 * losses[0], losses


def test_bf16_sampler_logprobs_match_its_own_scoring():
    # The sampler decodes with the KV cache (one token per step); compute_logprobs scores the
    # whole sequence at once. With bf16 products both round the same operands, so the on-policy
    # log-probs agree to f32-accumulation error, not just bf16 error.
    from jaxcook.sampling import LocalSamplingClient
    from jaxcook.types import ModelInput, SamplingParams
    from tests.sampling.tiny import CharTokenizer

    tok = CharTokenizer()
    client = LocalSamplingClient.from_model(set_matmul_dtype(tiny_model(seed=5), "bfloat16"), tok)
    prompt = ModelInput.from_ints(tok.encode("Hello, sampler"))
    seq = client.sample(prompt, 2, SamplingParams(max_tokens=8, seed=3)).result().sequences[0]
    full = ModelInput.from_ints(prompt.to_ints() + seq.tokens)
    scored = client.compute_logprobs(full).result()[prompt.length :]
    np.testing.assert_allclose(seq.logprobs, scored, atol=2e-3)
