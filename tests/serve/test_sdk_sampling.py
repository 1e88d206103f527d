"""Sampling through the real SDK: tokens and log-probs come back, the sampled log-probs are
the ones compute_logprobs and the trainer give, and saved sampler weights sample."""

import numpy as np
import pytest
from tinker import types

from tests.serve.conftest import sdk_datums


@pytest.fixture(scope="module")
def trained(server, service_client):
    tc = service_client.create_lora_training_client(base_model=server.cfg.base.model, rank=8, seed=5).result()
    data, _ = sdk_datums(6, seed=1)
    for _ in range(2):  # move off the base so the adapters matter
        tc.forward_backward(data, "cross_entropy").result()
        tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    return tc


def test_sample_returns_tokens_and_logprobs_that_match_scoring(trained):
    sampler = trained.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints([5, 17, 42, 99, 3, 250])
    resp = sampler.sample(prompt, 3, types.SamplingParams(max_tokens=8, seed=7, stop=[])).result()
    assert len(resp.sequences) == 3
    ids = [s.sequence_id for s in resp.sequences]
    assert len(set(ids)) == 3 and all(ids)
    for seq in resp.sequences:
        assert len(seq.tokens) == len(seq.logprobs) == 8 and seq.stop_reason == "length"
        assert all(0 <= t < 320 for t in seq.tokens) and all(lp <= 0 for lp in seq.logprobs)
        full = types.ModelInput.from_ints(prompt.to_ints() + list(seq.tokens))
        scored = sampler.compute_logprobs(full).result()
        assert scored[0] is None and len(scored) == full.length
        np.testing.assert_allclose(scored[prompt.length :], seq.logprobs, atol=1e-4)
        # The trainer's log-probs of the same tokens (forward, cross_entropy with weights 1).
        toks = full.to_ints()
        datum = types.Datum(
            model_input=types.ModelInput.from_ints(toks[:-1]),
            loss_fn_inputs={
                "target_tokens": np.asarray(toks[1:], np.int64),
                "weights": np.ones(len(toks) - 1, np.float32),
            },
        )
        train_lp = (
            trained.forward([datum], "cross_entropy").result().loss_fn_outputs[0]["logprobs"].to_numpy()
        )
        np.testing.assert_allclose(train_lp[prompt.length - 1 :], seq.logprobs, atol=1e-4)


def test_prompt_logprobs_and_seeded_sampling(trained):
    sampler = trained.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints([1, 2, 3, 4, 5, 6, 7])
    params = types.SamplingParams(max_tokens=5, seed=11, temperature=0.8)
    a = sampler.sample(prompt, 2, params, include_prompt_logprobs=True).result()
    b = sampler.sample(prompt, 2, params).result()
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]  # same seed, same tokens
    assert a.prompt_logprobs[0] is None and len(a.prompt_logprobs) == prompt.length
    np.testing.assert_allclose(
        a.prompt_logprobs[1:], sampler.compute_logprobs(prompt).result()[1:], atol=1e-5
    )


def test_named_sampler_weights_and_the_base_model(server, service_client, trained):
    path = trained.save_weights_for_sampler("sampler-a").result().path
    assert path == f"tinker://{trained.model_id}/sampler_weights/sampler-a"
    from_path = service_client.create_sampling_client(model_path=path).result()
    ephemeral = trained.save_weights_and_get_sampling_client().result()
    base = service_client.create_sampling_client(base_model=server.cfg.base.model).result()
    prompt = types.ModelInput.from_ints([9, 8, 7, 6])
    lp_path = from_path.compute_logprobs(prompt).result()[1:]
    np.testing.assert_allclose(lp_path, ephemeral.compute_logprobs(prompt).result()[1:], atol=1e-6)
    assert np.abs(np.subtract(lp_path, base.compute_logprobs(prompt).result()[1:])).max() > 1e-3
    seqs = base.sample(prompt, 1, types.SamplingParams(max_tokens=4)).result().sequences
    assert len(seqs[0].tokens) >= 1


def test_requests_sent_together_return_what_each_returns_alone(trained):
    # The server decodes requests that queue up on a busy sampler in one call
    # (jaxcook/serve/coalesce.py); each keeps its seed, so each gets what it gets alone.
    sampler = trained.save_weights_and_get_sampling_client().result()
    prompts = [types.ModelInput.from_ints(list(range(3, 3 + n))) for n in (4, 9, 6, 12, 5, 7)]
    params = [types.SamplingParams(max_tokens=6, seed=20 + i, stop=[]) for i in range(len(prompts))]
    alone = [sampler.sample(p, 3, sp).result() for p, sp in zip(prompts, params)]
    futures = [sampler.sample(p, 3, sp) for p, sp in zip(prompts, params)]
    together = [f.result() for f in futures]
    for a, b in zip(alone, together):
        assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
        np.testing.assert_allclose(
            [s.logprobs for s in a.sequences], [s.logprobs for s in b.sequences], atol=1e-5
        )
