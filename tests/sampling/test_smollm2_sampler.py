"""The sampler on the real SmolLM2-135M-Instruct: greedy answers, on-policy log-probs equal the
trainer's (so `kl_sample_train` is ~0), checkpoints sample like the client they came from."""

import asyncio

import numpy as np
import pytest

from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.renderers import get_renderer
from jaxcook.sampling import LocalMessageCompleter, LocalSamplingClient
from jaxcook.types import AdamParams, Datum, ModelInput, SamplingParams

NAME = "smollm2-135m-instruct"
LORA = LoraConfig(rank=8)


def datum(prompt: list[int], completion: list[int]) -> Datum:
    full = prompt + completion
    inputs = {"target_tokens": full[1:], "weights": np.ones(len(full) - 1, np.float32)}
    return Datum(ModelInput.from_ints(full[:-1]), inputs)


@pytest.mark.slow
def test_smollm2_greedy_on_policy_logprobs_and_checkpoint(tmp_path):
    tc = LocalTrainingClient.create(
        NAME, lora=LORA, buckets=BucketConfig(seq_buckets=(64,), batch_buckets=(4,))
    )
    tok = tc.tokenizer
    prompt = tok("The capital of France is")["input_ids"]
    greedy = SamplingParams(max_tokens=1, temperature=0.0)
    first = (
        LocalSamplingClient.from_training_client(tc).sample(ModelInput.from_ints(prompt), 1, greedy).result()
    )
    assert tok.decode(first.sequences[0].tokens) == " Paris"

    # One LoRA step so the adapters are not zero, then sample and score with the trainer.
    tc.forward_backward([datum(prompt, tok(" Lyon.")["input_ids"])])
    tc.optim_step(AdamParams(learning_rate=1e-3))
    sc = LocalSamplingClient.from_training_client(tc)
    resp = sc.sample(ModelInput.from_ints(prompt), 4, SamplingParams(max_tokens=24, seed=0)).result()
    trainer = tc.forward([datum(prompt, s.tokens) for s in resp.sequences]).result().loss_fn_outputs
    diffs = [
        np.abs(np.asarray(s.logprobs) - out["logprobs"][len(prompt) - 1 :]).max()
        for s, out in zip(resp.sequences, trainer)
    ]
    assert max(diffs) <= 1e-4, diffs

    # A checkpoint of the same weights samples the same tokens with the same log-probs.
    tc.save_state(tmp_path / "ckpt", with_optimizer=False).result()
    restored = LocalSamplingClient.from_checkpoint(tmp_path / "ckpt", NAME, LORA)
    again = restored.sample(ModelInput.from_ints(prompt), 4, SamplingParams(max_tokens=24, seed=0)).result()
    for a, b in zip(resp.sequences, again.sequences):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)

    # The chat path: a message completer on the chatml renderer stops at <|im_end|>.
    renderer = get_renderer("chatml", tok)
    completer = LocalMessageCompleter(sc, renderer, max_tokens=40, temperature=0.0)
    reply = asyncio.run(completer([{"role": "user", "content": "What is the capital of France?"}]))
    assert reply["role"] == "assistant" and "Paris" in reply["content"]
