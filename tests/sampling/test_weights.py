"""Sampler weights for bf16 products: kernels rounded once and the tied unembedding's bf16
[D, V] copy give the model's own numbers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcook.lora import LoraConfig
from jaxcook.models.decoder import Decoder
from jaxcook.models.layers import Linear, set_matmul_dtype
from jaxcook.sampling.decode import decode
from jaxcook.sampling.weights import UNEMBED, bf16_kernels, graph_of, merge_parts, part_of
from tests.engine.tiny import TINY, tiny_model
from tests.sampling.test_decode import SPEC, inputs
from tests.sampling.tiny import greedy_reference

TIED = dataclasses.replace(TINY, tie_word_embeddings=True)


def setup(model):
    graphdef, state = nnx.split(model)
    return graph_of(graphdef, state), merge_parts(part_of(state, TINY.num_layers))


def hidden(seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(3, TINY.hidden_size)), jnp.float32)


def test_bf16_tied_unembed_copy_with_an_adapter_equals_the_model_unembed():
    lora = LoraConfig(rank=2, train_unembed=True)
    model = set_matmul_dtype(Decoder(TIED, lora=lora, rngs=nnx.Rngs(params=1, lora=2)), "bfloat16")
    model.lm_head_lora.lora_b.value = jnp.full_like(model.lm_head_lora.lora_b.value, 0.1)  # adapter on
    graph, weights = setup(model)
    cast = jax.jit(lambda w: bf16_kernels(graph, w))(weights)
    assert UNEMBED in cast.top and UNEMBED not in weights.top
    untied = setup(set_matmul_dtype(tiny_model(), "bfloat16"))
    assert UNEMBED not in bf16_kernels(*untied).top  # tied models only
    got = jax.jit(graph.unembed)(cast, hidden())
    np.testing.assert_allclose(got, model.unembed(hidden()), rtol=1e-5, atol=1e-5)


def test_tied_greedy_decode_equals_the_full_forward():
    model = Decoder(TIED, rngs=nnx.Rngs(params=4))
    graph, weights = setup(model)
    out = decode(graph, SPEC, weights, inputs([[5, 6, 7]], [0], temperature=0.0))
    want_tokens, want_lps = greedy_reference(model, [5, 6, 7], 12)
    assert out.tokens_RN[0, :12].tolist() == want_tokens
    np.testing.assert_allclose(out.logprobs_RN[0, :12], want_lps, atol=1e-5)


def test_bf16_kernels_round_only_bf16_product_kernels_and_keep_the_numbers():
    model = set_matmul_dtype(Decoder(TIED, rngs=nnx.Rngs(params=3)), "bfloat16")
    graph, weights = setup(model)
    cast = jax.jit(lambda w: bf16_kernels(graph, w))(weights)
    block = graph.block_at(cast, 0)
    kernels = [m.kernel.value.dtype for _, m in nnx.iter_modules(block) if isinstance(m, Linear)]
    assert kernels and all(d == jnp.bfloat16 for d in kernels)
    assert cast.top[UNEMBED].dtype == jnp.bfloat16
    assert graph.shell(cast).embed_tokens.embedding.value.dtype == jnp.float32  # the lookup table
    x = hidden(1)[:, None, :]
    run = jax.jit(lambda w, x: graph.block_at(w, 0).mlp(x))
    np.testing.assert_allclose(run(cast, x), run(weights, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        jax.jit(graph.unembed)(cast, hidden()), model.unembed(hidden()), rtol=1e-5, atol=1e-5
    )
    f32 = setup(Decoder(TIED, rngs=nnx.Rngs(params=3)))
    assert bf16_kernels(*f32) is f32[1]  # f32 products: nothing to do
