"""A run compiles a bounded number of decode programs: one per bucket combination it touches."""

import logging
import re

import jax
import numpy as np

from jaxcook.models.decoder import Decoder
from jaxcook.sampling import LocalSamplingClient, SamplerBuckets
from jaxcook.sampling.plan import round_up
from jaxcook.types import ModelInput, SamplingParams
from tests.engine.tiny import TINY
from tests.sampling.tiny import CharTokenizer

BUCKETS = SamplerBuckets(rows=(4, 8), prompts=(2, 4), prompt_len=(16, 32), new_tokens=(16, 32))


class CompileLog(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if re.match(r"Finished XLA compilation of jit\(decode\)", record.getMessage()):
            self.count += 1


def test_random_requests_compile_once_per_bucket_combination():
    # A structure no other test uses (1 layer): jit caches are global.
    from dataclasses import replace

    from flax import nnx

    model = Decoder(replace(TINY, num_layers=1), rngs=nnx.Rngs(params=0))
    client = LocalSamplingClient.from_model(model, CharTokenizer(), buckets=BUCKETS)
    rng = np.random.default_rng(0)
    calls, combos = [], set()
    for _ in range(8):  # 1-2 prompts x 1-3 samples, 1-31 prompt tokens, 1-16 new tokens
        n_prompts = int(rng.integers(1, 3))
        lengths = rng.integers(1, 32, n_prompts)
        samples = int(rng.integers(1, 4))
        max_tokens = int(rng.integers(1, 17))
        prompts = [ModelInput.from_ints(rng.integers(0, 95, n).tolist()) for n in lengths]
        calls.append((prompts, samples, SamplingParams(max_tokens=max_tokens)))
        combos.add(
            (
                round_up(n_prompts, BUCKETS.prompts),
                round_up(n_prompts * samples, BUCKETS.rows),
                round_up(int(lengths.max()), BUCKETS.prompt_len),
                round_up(max_tokens, BUCKETS.new_tokens),
            )
        )
    handler = CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        for prompts, samples, params in calls:
            client.sample_many(prompts, samples, params).result()
        first = handler.count
        for prompts, samples, params in calls:  # new requests of the same shapes: no compile
            client.sample_many(prompts, samples, params).result()
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    assert first == len(combos) <= 1 * 2 * 2 * 1  # prompts x rows x prompt_len x new_tokens buckets
    assert handler.count == first
