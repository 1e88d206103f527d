"""Host side of one sampler call: sample requests -> bucketed decode arrays -> `SampleResponse`s.

Every dimension of the decode program is rounded up to a bucket (rows, distinct prompts, prompt
length, new tokens, stop-token and stop-sequence counts and lengths), so a run compiles a
bounded number of programs: at most the product of the buckets its requests touch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from jaxcook.sampling.decode import ANY, NEVER, DecodeInputs, DecodeOutputs, DecodeSpec
from jaxcook.sampling.stops import StopSpec, cut_at_stop_string
from jaxcook.types import SampledSequence, SampleResponse

GEOMETRIC = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass(frozen=True, kw_only=True)
class SamplerBuckets:
    """Sizes each decode dimension is rounded up to (past the last: a multiple of it)."""

    rows: tuple[int, ...] = GEOMETRIC  # sample rows (prompts x samples)
    prompts: tuple[int, ...] = GEOMETRIC  # distinct prompts (prefill rows)
    prompt_len: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    new_tokens: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

    def __post_init__(self):
        for name in ("rows", "prompts", "prompt_len", "new_tokens"):
            sizes = getattr(self, name)
            if not sizes or any(b <= 0 for b in sizes) or list(sizes) != sorted(set(sizes)):
                raise ValueError(f"SamplerBuckets.{name} must be increasing positive sizes, got {sizes}")
        if self.prompt_len[0] < 2:
            raise ValueError("SamplerBuckets.prompt_len must start at >= 2")


def round_up(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return b
    return -(-n // buckets[-1]) * buckets[-1]


def _pow2(n: int, least: int) -> int:
    """The smallest power of two >= max(n, least)."""
    return 1 << max(0, max(n, least) - 1).bit_length()


@dataclass(frozen=True)
class Request:
    """One prompt and how to sample it (parameters already resolved and checked)."""

    tokens: tuple[int, ...]
    num_samples: int
    max_tokens: int
    seed: int
    temperature: float
    top_k: int
    top_p: float
    stop: StopSpec
    prompt_logprobs: bool = False


def build(requests: Sequence[Request], buckets: SamplerBuckets) -> tuple[DecodeSpec, DecodeInputs]:
    """Bucketed numpy decode inputs for `requests` (rows in request order, then padding)."""
    P = round_up(len(requests), buckets.prompts)
    T = round_up(max(len(r.tokens) for r in requests), buckets.prompt_len)
    n_rows = sum(r.num_samples for r in requests)
    R = round_up(n_rows, buckets.rows)
    N = round_up(max(r.max_tokens for r in requests), buckets.new_tokens)
    # Stop shapes: few sizes (a stop list rarely changes within a run); no sequences, no check.
    K = _pow2(max(len(r.stop.tokens) for r in requests), 4)
    M = max(len(r.stop.sequences) for r in requests)
    M = _pow2(M, 2) if M else 0
    Q = _pow2(max((len(s) for r in requests for s in r.stop.sequences), default=1), 8)

    prompt_PT = np.zeros((P, T), np.int32)
    prompt_len_P = np.ones((P,), np.int32)  # padding prompts: one pad token
    for p, r in enumerate(requests):
        prompt_PT[p, T - len(r.tokens) :] = r.tokens
        prompt_len_P[p] = len(r.tokens)
    row_prompt_R = np.zeros((R,), np.int32)
    row_valid_R = np.zeros((R,), bool)
    seed_R = np.zeros((R,), np.uint32)
    sample_index_R = np.zeros((R,), np.int32)
    max_tokens_R = np.ones((R,), np.int32)
    temperature_R = np.ones((R,), np.float32)
    top_k_R = np.zeros((R,), np.int32)
    top_p_R = np.ones((R,), np.float32)
    stop_tokens_RK = np.full((R, K), -1, np.int32)
    stop_seqs_RMQ = np.full((R, M, Q), NEVER, np.int32)
    row = 0
    for p, r in enumerate(requests):
        rows = slice(row, row + r.num_samples)
        row_prompt_R[rows], row_valid_R[rows] = p, True
        seed_R[rows] = r.seed % 2**32
        sample_index_R[rows] = np.arange(r.num_samples)
        max_tokens_R[rows] = r.max_tokens
        temperature_R[rows], top_k_R[rows], top_p_R[rows] = r.temperature, r.top_k, r.top_p
        stop_tokens_RK[rows, : len(r.stop.tokens)] = r.stop.tokens
        for m, seq in enumerate(r.stop.sequences):
            stop_seqs_RMQ[rows, m, :] = ANY
            stop_seqs_RMQ[rows, m, Q - len(seq) :] = seq
        row += r.num_samples
    filtered = any(r.top_k > 0 or r.top_p < 1.0 for r in requests)
    spec = DecodeSpec(max_new=N, filtered=filtered, prompt_logprobs=any(r.prompt_logprobs for r in requests))
    inputs = DecodeInputs(
        prompt_PT,
        prompt_len_P,
        row_prompt_R,
        row_valid_R,
        seed_R,
        sample_index_R,
        max_tokens_R,
        temperature_R,
        top_k_R,
        top_p_R,
        stop_tokens_RK,
        stop_seqs_RMQ,
    )
    return spec, inputs


def unpack(
    requests: Sequence[Request], out: DecodeOutputs, decode_text: Callable | None
) -> list[SampleResponse]:
    """One `SampleResponse` per request from host (numpy) decode outputs; applies the exact
    stop-string cut (see `stops.py`)."""
    responses, row = [], 0
    T = out.prompt_logprobs_PT.shape[1] if out.prompt_logprobs_PT is not None else 0
    for p, r in enumerate(requests):
        sequences = []
        for i in range(row, row + r.num_samples):
            n = int(out.length_R[i])
            tokens = out.tokens_RN[i, :n].tolist()
            stopped = bool(out.stopped_R[i])
            if r.stop.strings:
                cut = cut_at_stop_string(tokens, r.stop.strings, decode_text)
                if cut is not None:
                    n, tokens, stopped = cut, tokens[:cut], True
            logprobs = out.logprobs_RN[i, :n].tolist()
            sequences.append(SampledSequence(tokens, logprobs, "stop" if stopped else "length"))
        row += r.num_samples
        prompt_lp = None
        if r.prompt_logprobs:
            offset = T - len(r.tokens)
            prompt_lp = [None, *out.prompt_logprobs_PT[p, offset + 1 :].tolist()]
        responses.append(SampleResponse(sequences, prompt_lp))
    return responses
