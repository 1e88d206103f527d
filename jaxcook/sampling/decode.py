"""The pure sampler: prefill + decode loop over a KV cache, one jitted function.

    out = decode(graph, spec, weights, inputs)

Layout. P distinct prompts are left-padded to T slots (pad tokens have segment 0, real tokens
segment 1 and positions 0..len-1) and prefilled once. Their caches (and last-position logits)
are then gathered into R sample rows (`row_prompt_R`), so a group of G samples of one prompt
shares one prefill. The cache has S = T + N slots (N = `spec.max_new`); generated token n of a
row is fed back at slot T + n with position len + n.

Loop. Token 0 of every row is drawn from the prefill logits; then `lax.while_loop` feeds the
last token, draws the next one, and exits as soon as every row is done or N tokens exist. A row
is done when its token is a stop token, when its last tokens equal one of its stop sequences
(tokenised stop strings), or when it has `max_tokens_R` tokens. The stopping token is part of
the output (Tinker semantics); rows that are done keep computing (masked) until all are.

Randomness. Token n of row r is drawn with `fold_in(fold_in(key(seed_r), sample_index_r), n)`,
so a row's tokens depend only on its prompt, parameters, seed and sample index: sharing a
prefill or not, and the other rows of the batch, change nothing.

Log-probabilities. `logprobs_RN` is log softmax of the raw logits (temperature 1, no
filtering) at the sampled token: the quantity `jaxcook.core.logprobs.target_logprobs` computes
in training. `sampling_logprobs_RN` is the log-probability under the distribution actually
sampled (temperature, top-k, top-p; 0 for greedy). `prompt_logprobs_PT[p, s]` (if asked) is
log p(token at slot s | slots < s) in the padded layout (junk on padding and slot 0).

The layer loop below is the cached branch of `Decoder.__call__` applied layer by layer over
unstacked weights (see `weights.py` for why); it calls the model's own blocks, embedding,
norm and unembedding.

Mesh. With weights on a mesh (`graph.mesh`, e.g. the training client's), decode runs there:
the weights stay in the trainer's sharding, the KV cache [B, S, K, D] is split over the batch
axes (rows) and `tensor` (kv heads), and activations are pinned the same way as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcook.core.logprobs import chunked_target_logprobs
from jaxcook.engine.sharding import activation_mesh, constrain
from jaxcook.models.decoder import cache_dims
from jaxcook.sampling.token_sampling import sample_tokens
from jaxcook.sampling.weights import SamplerGraph, SamplerWeights, bf16_kernels

NEVER = -2  # stop-sequence filler that matches no token (an unused sequence slot)
ANY = -1  # left padding of a right-aligned stop sequence: matches anything
BEFORE = -3  # history entries before the first generated token: match no stop token


@dataclass(frozen=True)
class DecodeSpec:
    """Static decode settings (each distinct value compiles its own program)."""

    max_new: int  # N: the most tokens any row may generate (a bucket)
    filtered: bool = False  # some row uses top-k or top-p
    prompt_logprobs: bool = False


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class DecodeInputs:
    prompt_PT: jax.Array  # int32 left-padded prompts
    prompt_len_P: jax.Array  # int32 real tokens per prompt (>= 1)
    row_prompt_R: jax.Array  # int32 prompt of each sample row
    row_valid_R: jax.Array  # bool; padding rows are done before they start
    seed_R: jax.Array  # uint32
    sample_index_R: jax.Array  # int32
    max_tokens_R: jax.Array  # int32 in [1, N]
    temperature_R: jax.Array  # f32; 0 = greedy
    top_k_R: jax.Array  # int32; <= 0 = off
    top_p_R: jax.Array  # f32 in (0, 1]; 1 = off
    stop_tokens_RK: jax.Array  # int32, -1 = unused
    stop_seqs_RMQ: jax.Array  # int32 right-aligned token sequences, ANY-padded; NEVER = unused


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class DecodeOutputs:
    tokens_RN: jax.Array  # int32; entries past length_R are 0
    logprobs_RN: jax.Array  # f32 model log-probs (temperature 1), as the trainer computes
    sampling_logprobs_RN: jax.Array  # f32 log-probs under the sampling distribution
    length_R: jax.Array  # int32 tokens generated
    stopped_R: jax.Array  # bool: ended by a stop token / sequence (else by max_tokens)
    prompt_logprobs_PT: jax.Array | None


def forward(
    graph: SamplerGraph, weights: SamplerWeights, tokens_BT, positions_BT, seg_q_BT, kv, seg_k_BS, index
):
    """Final hidden states [B, T, D] and the updated per-layer caches after writing T tokens at
    slots `index .. index + T` (the cached path of `Decoder.__call__`, layer by layer)."""
    cfg = graph.config
    shell = graph.shell(weights)
    T, S = tokens_BT.shape[1], seg_k_BS.shape[1]
    x_BTD = shell.embed_tokens(tokens_BT).astype(shell.param_dtype)
    # (cos, sin, mask) per attention kind (full / sliding window), as in `Decoder.__call__`
    inputs = shell.attention_inputs(positions_BT, index + jnp.arange(T), jnp.arange(S), seg_q_BT, seg_k_BS)
    new_kv = []
    k = cfg.first_dense_layers  # the dense prefix lives in the shell, unstacked (DeepSeek V3)
    for i in range(cfg.num_layers):
        block = shell.dense_layers[i] if i < k else graph.block_at(weights, i - k)
        x_BTD, kv_i = block(x_BTD, *shell.layer_inputs(inputs, i), kv[i], index)
        new_kv.append(kv_i)
    return shell, shell.norm(x_BTD), tuple(new_kv)


class _Rows(NamedTuple):
    """What the loop carries per row besides the cache."""

    tokens_RN: jax.Array
    logprobs_RN: jax.Array
    sampling_logprobs_RN: jax.Array
    length_R: jax.Array
    done_R: jax.Array
    stopped_R: jax.Array
    recent_RQ: jax.Array  # the last Q generated tokens (BEFORE-filled), for stop sequences
    last_R: jax.Array  # the newest token, fed back next step


def _step_keys(seed_R, sample_index_R, n):
    return jax.vmap(lambda s, j: jax.random.fold_in(jax.random.fold_in(jax.random.key(s), j), n))(
        seed_R, sample_index_R
    )


def _hits_stop(token_R, recent_RQ, inputs: DecodeInputs):
    """Whether each row's newest token is a stop token or completes a stop sequence."""
    by_token_R = (token_R[:, None] == inputs.stop_tokens_RK).any(-1)
    seqs_RMQ = inputs.stop_seqs_RMQ
    if seqs_RMQ.shape[1] == 0:
        return by_token_R
    match_RMQ = (seqs_RMQ == ANY) | (seqs_RMQ == recent_RQ[:, None, :])
    return by_token_R | match_RMQ.all(-1).any(-1)


def kv_constrain(c_BSKD):
    """A layer's cache: rows over the batch axes, kv heads over `tensor` (a one-head cache, the
    latents of latent attention, is whole on every `tensor` device)."""
    return constrain(c_BSKD, ("batch", None, "kv_heads" if c_BSKD.shape[2] > 1 else None, None))


@partial(jax.jit, static_argnums=(0, 1))
def decode(
    graph: SamplerGraph, spec: DecodeSpec, weights: SamplerWeights, inputs: DecodeInputs
) -> DecodeOutputs:
    with activation_mesh(graph.mesh):
        return _decode(graph, spec, weights, inputs)


def _decode(graph: SamplerGraph, spec: DecodeSpec, weights: SamplerWeights, inputs: DecodeInputs):
    cfg = graph.config
    weights = bf16_kernels(graph, weights)  # once per call, not once per step
    P, T = inputs.prompt_PT.shape
    R, N = inputs.row_prompt_R.shape[0], spec.max_new
    Q = inputs.stop_seqs_RMQ.shape[2]

    # Prefill the P prompts (left-padded), then give every sample row its prompt's cache.
    slot_T = jnp.arange(T)
    offset_P = T - inputs.prompt_len_P
    real_PT = slot_T[None, :] >= offset_P[:, None]
    seg_PT = real_PT.astype(jnp.int32)
    positions_PT = jnp.where(real_PT, slot_T[None, :] - offset_P[:, None], 0)
    dtype = graph.shell(weights).param_dtype
    k_dims, v_dims = cache_dims(cfg)
    empty = (kv_constrain(jnp.zeros((P, T, *k_dims), dtype)), kv_constrain(jnp.zeros((P, T, *v_dims), dtype)))
    kv_P = tuple(empty for _ in range(cfg.num_layers))
    # Prefill attends over the T prompt slots only; the N generation slots are added after.
    shell, h_PTD, kv_P = forward(graph, weights, inputs.prompt_PT, positions_PT, seg_PT, kv_P, seg_PT, 0)
    seg_k_PS = jnp.concatenate([seg_PT, jnp.ones((P, N), jnp.int32)], axis=1)
    prompt_lp = None
    if spec.prompt_logprobs:
        unembed = partial(graph.unembed, weights)
        lp_PT1 = chunked_target_logprobs(unembed, h_PTD[:, :-1], inputs.prompt_PT[:, 1:])
        prompt_lp = jnp.pad(lp_PT1, ((0, 0), (1, 0)))
    prompt_R = inputs.row_prompt_R
    kv = jax.tree.map(
        lambda c: kv_constrain(jnp.pad(c, ((0, 0), (0, N), (0, 0), (0, 0)))[prompt_R]), kv_P
    )  # [R, S, K, D]
    seg_k_RS = seg_k_PS[prompt_R]
    len_R = inputs.prompt_len_P[prompt_R]
    logits_RV = graph.unembed(weights, h_PTD[:, -1])[prompt_R]

    def draw(logits_RV, n):
        keys = _step_keys(inputs.seed_R, inputs.sample_index_R, n)
        return sample_tokens(
            logits_RV, keys, inputs.temperature_R, inputs.top_k_R, inputs.top_p_R, filtered=spec.filtered
        )

    def record(rows: _Rows, n, token_R, lp_R, slp_R) -> _Rows:
        """Write token n of the rows still running; update done / stopped / lengths."""
        live_R = ~rows.done_R
        recent_RQ = jnp.concatenate([rows.recent_RQ[:, 1:], token_R[:, None]], axis=1)
        hit_R = live_R & _hits_stop(token_R, recent_RQ, inputs)
        length_R = rows.length_R + live_R
        return _Rows(
            rows.tokens_RN.at[:, n].set(jnp.where(live_R, token_R, 0)),
            rows.logprobs_RN.at[:, n].set(jnp.where(live_R, lp_R, 0.0)),
            rows.sampling_logprobs_RN.at[:, n].set(jnp.where(live_R, slp_R, 0.0)),
            length_R,
            rows.done_R | hit_R | (length_R >= inputs.max_tokens_R),
            rows.stopped_R | hit_R,
            recent_RQ,
            token_R,
        )

    rows = _Rows(
        jnp.zeros((R, N), jnp.int32),
        jnp.zeros((R, N), jnp.float32),
        jnp.zeros((R, N), jnp.float32),
        jnp.zeros((R,), jnp.int32),
        ~inputs.row_valid_R,
        jnp.zeros((R,), bool),
        jnp.full((R, Q), BEFORE, jnp.int32),
        jnp.zeros((R,), jnp.int32),
    )
    rows = record(rows, 0, *draw(logits_RV, 0))

    def cond(carry):
        n, _, rows = carry
        return (n < N) & ~rows.done_R.all()

    def body(carry):
        n, kv, rows = carry
        ones_R1 = jnp.ones((R, 1), jnp.int32)
        _, h_R1D, kv = forward(
            graph, weights, rows.last_R[:, None], (len_R + n - 1)[:, None], ones_R1, kv, seg_k_RS, T + n - 1
        )
        kv = jax.tree.map(kv_constrain, kv)
        logits_RV = graph.unembed(weights, h_R1D[:, 0])
        return n + 1, kv, record(rows, n, *draw(logits_RV, n))

    _, _, rows = jax.lax.while_loop(cond, body, (jnp.int32(1), kv, rows))
    return DecodeOutputs(
        rows.tokens_RN, rows.logprobs_RN, rows.sampling_logprobs_RN, rows.length_R, rows.stopped_R, prompt_lp
    )
