"""The pure decode loop on a tiny random decoder: cache vs full forward, shared prefill, rows.

Every call uses the same shapes (6 prompt slots, 6 rows, 16 prompt slots, 16 new tokens), so the
file compiles one decode program per spec.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcook.sampling.decode import NEVER, DecodeInputs, DecodeSpec, decode
from jaxcook.sampling.weights import graph_of, merge_parts, part_of
from tests.engine.tiny import TINY, tiny_model
from tests.sampling.tiny import full_forward_logprobs, greedy_reference

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [40]]
P = R = 6
SPEC = DecodeSpec(max_new=16, prompt_logprobs=True)


def setup(model):
    graphdef, state = nnx.split(model)
    return graph_of(graphdef, state), merge_parts(part_of(state, TINY.num_layers))


def inputs(prompts, row_prompt, *, sample_index=None, seed=0, temperature=1.0, max_tokens=12, T=16):
    """Decode inputs with prompts padded to P slots and rows to R (padding rows invalid)."""
    prompts = list(prompts) + [[1]] * (P - len(prompts))
    n = len(row_prompt)
    prompt_PT = np.zeros((P, T), np.int32)
    for p, toks in enumerate(prompts):
        prompt_PT[p, T - len(toks) :] = toks
    row = lambda value, dtype: jnp.full((R,), value, dtype)
    pad = lambda xs: jnp.asarray(list(xs) + [0] * (R - n), jnp.int32)
    return DecodeInputs(
        prompt_PT=jnp.asarray(prompt_PT),
        prompt_len_P=jnp.asarray([len(p) for p in prompts], jnp.int32),
        row_prompt_R=pad(row_prompt),
        row_valid_R=jnp.arange(R) < n,
        seed_R=row(seed, jnp.uint32),
        sample_index_R=pad(sample_index if sample_index is not None else [0] * n),
        max_tokens_R=row(max_tokens, jnp.int32),
        temperature_R=row(temperature, jnp.float32),
        top_k_R=row(0, jnp.int32),
        top_p_R=row(1.0, jnp.float32),
        stop_tokens_RK=jnp.full((R, 1), -1, jnp.int32),
        stop_seqs_RMQ=jnp.full((R, 0, 1), NEVER, jnp.int32),
    )


def test_greedy_with_cache_equals_argmax_of_full_forward():
    model = tiny_model(seed=3)
    graph, weights = setup(model)
    rows = [0, 1, 2, 1]  # prompts of different lengths (left padding), one used twice
    out = decode(graph, SPEC, weights, inputs(PROMPTS, rows, temperature=0.0))
    for r, p in enumerate(rows):
        want_tokens, want_lps = greedy_reference(model, PROMPTS[p], 12)
        assert int(out.length_R[r]) == 12
        assert out.tokens_RN[r, :12].tolist() == want_tokens
        np.testing.assert_allclose(out.logprobs_RN[r, :12], want_lps, atol=1e-5)
    assert (np.asarray(out.length_R[4:]) == 0).all()  # padding rows generate nothing


def test_shared_prefill_equals_separate_prefills():
    graph, weights = setup(tiny_model(seed=1))
    G = 6
    shared = decode(graph, SPEC, weights, inputs([PROMPTS[1]], [0] * G, sample_index=range(G), seed=7))
    separate = decode(graph, SPEC, weights, inputs([PROMPTS[1]] * G, range(G), sample_index=range(G), seed=7))
    np.testing.assert_array_equal(shared.tokens_RN, separate.tokens_RN)
    np.testing.assert_allclose(shared.logprobs_RN, separate.logprobs_RN, atol=1e-6)
    assert len({tuple(t) for t in np.asarray(shared.tokens_RN).tolist()}) > 1  # the samples differ


def test_a_row_does_not_depend_on_the_other_rows():
    graph, weights = setup(tiny_model(seed=2))
    alone = decode(graph, SPEC, weights, inputs([PROMPTS[0]], [0], seed=5))
    crowd = decode(graph, SPEC, weights, inputs(PROMPTS, [1, 2, 0, 0], sample_index=[0, 0, 0, 1], seed=5))
    np.testing.assert_array_equal(alone.tokens_RN[0], crowd.tokens_RN[2])
    assert alone.tokens_RN[0].tolist() != crowd.tokens_RN[3].tolist()  # another sample index differs


def test_sampled_logprobs_and_prompt_logprobs_equal_full_forward():
    model = tiny_model(seed=4)
    graph, weights = setup(model)
    out = decode(graph, SPEC, weights, inputs(PROMPTS, [0, 1, 2]))
    for r, prompt in enumerate(PROMPTS):
        seq = prompt + out.tokens_RN[r, :12].tolist()
        lp_TV = full_forward_logprobs(model, seq)
        want = [lp_TV[i - 1, seq[i]] for i in range(1, len(seq))]
        n = len(prompt)
        np.testing.assert_allclose(out.logprobs_RN[r, :12], want[n - 1 :], atol=1e-5)
        np.testing.assert_allclose(out.prompt_logprobs_PT[r, 16 - n + 1 :], want[: n - 1], atol=1e-5)


def test_device_stops_at_stop_tokens_and_sequences_and_max_tokens():
    import dataclasses

    from jaxcook.sampling.decode import ANY

    graph, weights = setup(tiny_model(seed=3))
    base = inputs(PROMPTS, [0, 1, 2], temperature=0.0)
    ref = np.asarray(decode(graph, SPEC, weights, base).tokens_RN)
    # Row 0 stops at a token; row 1 at a 2-token sequence; row 2 at max_tokens = 4.
    stop_tokens = np.full((R, 4), -1, np.int32)
    stop_tokens[0, 0] = ref[0, 6]
    seqs = np.full((R, 2, 4), NEVER, np.int32)
    seqs[1, 0] = [ANY, ANY, ref[1, 4], ref[1, 5]]
    max_tokens = np.array([12, 12, 4, 12, 12, 12], np.int32)
    stopped = dataclasses.replace(
        base,
        stop_tokens_RK=jnp.asarray(stop_tokens),
        stop_seqs_RMQ=jnp.asarray(seqs),
        max_tokens_R=jnp.asarray(max_tokens),
    )
    out = decode(graph, SPEC, weights, stopped)
    first = lambda row, t: next(i for i in range(12) if ref[row, i] == t) + 1
    want_len = [
        first(0, ref[0, 6]),
        next(i + 1 for i in range(1, 12) if (ref[1, i - 1], ref[1, i]) == (ref[1, 4], ref[1, 5])),
        4,
    ]
    assert np.asarray(out.length_R[:3]).tolist() == want_len
    assert np.asarray(out.stopped_R[:3]).tolist() == [True, True, False]
    for r, n in enumerate(want_len):
        np.testing.assert_array_equal(out.tokens_RN[r, :n], ref[r, :n])
        assert (np.asarray(out.tokens_RN[r, n:]) == 0).all()
