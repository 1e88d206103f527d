"""The local backend behind the ports: its service, the fast paths it hides, and saved states.

Each check compares a port call with the same numbers computed another way: a split call with
its parts, a snapshot's `compute_logprobs` with the trainer's `forward` and with the sampler's
prefill, a client made from a saved state with the client that saved it.
"""

import numpy as np
import pytest

from jaxcook import ports
from jaxcook.backends import make_service
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.types import AdamParams, Datum, ModelInput, SamplingParams
from tests.engine.tiny import random_datums

MODEL = "tiny-random-smollm2"


def trained_client(service, rank=4, steps=2):
    client = service.create_lora_training_client(MODEL, rank)
    data = [Datum(d.model_input, d.loss_fn_inputs) for d in _data(4, seed=1)]
    for _ in range(steps):  # move the adapters off zero so LoRA matters
        client.forward_backward(data)
        client.optim_step(AdamParams(learning_rate=3e-2))
    return client


def _data(n, seed=0, lengths=(5, 30)):
    # tiny-random-smollm2's vocabulary is larger than tests/engine/tiny.py's (97): ids stay valid
    return random_datums(n, lengths=lengths, seed=seed)


@pytest.fixture(scope="module")
def service():
    return make_service("local", max_length=64, batch_size=4)


def test_the_local_service_and_its_clients_implement_the_ports(service):
    client = service.create_lora_training_client(MODEL, 4)
    try:
        assert isinstance(service, ports.ServiceClient) and isinstance(client, ports.TrainingClient)
        info = client.get_info()
        assert (info.model_name, info.is_lora, info.lora_rank) == (MODEL, True, 4)
        assert info.context_window > 0
        sc = client.save_weights_and_get_sampling_client()
        assert isinstance(sc, ports.SamplingClient)
        sc.close()
    finally:
        client.close()


def test_a_call_longer_than_the_largest_bucket_is_split_behind_the_port(service):
    client = trained_client(service)
    try:
        # largest batch: 4 rows of up to 128 tokens (packed); ~700 tokens need two calls or more
        data = _data(40, seed=2)
        assert len(client._parts(data)) > 1
        whole = client.forward(data).result()
        parts = [client.forward(data[i : i + 4]).result() for i in range(0, 40, 4)]
        for a, b in zip(whole.loss_fn_outputs, [o for p in parts for o in p.loss_fn_outputs], strict=True):
            np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-6)
        assert whole.metrics["loss:sum"] == pytest.approx(sum(p.metrics["loss:sum"] for p in parts), rel=1e-5)
    finally:
        client.close()


def test_a_snapshot_scores_prompts_with_the_trainers_forward(service):
    client = trained_client(service)
    try:
        data = _data(6, seed=3)
        forward = client.forward(
            [Datum(d.model_input, {**d.loss_fn_inputs, "weights": np.ones(d.length)}) for d in data]
        ).result()
        prompts = [
            ModelInput.from_ints([*d.model_input.to_ints(), int(d.loss_fn_inputs["target_tokens"][-1])])
            for d in data
        ]
        sc = client.save_weights_and_get_sampling_client()
        client.optim_step(AdamParams(learning_rate=1.0)).result()  # later training leaves the snapshot alone
        scored = sc.compute_logprobs_many(prompts).result()
        for lp, out in zip(scored, forward.loss_fn_outputs, strict=True):
            assert lp[0] is None
            np.testing.assert_allclose(np.asarray(lp[1:], np.float32), out["logprobs"], atol=1e-6)
        # the sampler's own prefill (a client of the same weights without the trainer's scorer)
        assert sc.compute_logprobs(prompts[0]).result() == scored[0]
        last = sc.compute_logprobs_many(prompts, prompt_logprobs_last_n=[3] * len(prompts)).result()
        for lp, full in zip(last, scored, strict=True):
            assert lp[:-3] == [None] * (len(lp) - 3)
            np.testing.assert_allclose(lp[-3:], full[-3:], atol=1e-6)
        sc.close()
    finally:
        client.close()


def test_trainer_scoring_matches_the_samplers_prefill(service):
    client = trained_client(service)
    try:
        prompts = [d.model_input for d in _data(3, seed=4)]
        trainer = client.save_weights_and_get_sampling_client()
        prefill = LocalSamplingClient.from_training_client(client)
        for a, b in zip(
            trainer.compute_logprobs_many(prompts).result(),
            prefill.compute_logprobs_many(prompts).result(),
            strict=True,
        ):
            assert a[0] is None and b[0] is None
            np.testing.assert_allclose(a[1:], b[1:], atol=2e-5)
        trainer.close()
        prefill.close()
    finally:
        client.close()


def test_a_saved_state_opens_as_a_training_or_a_sampling_client(service, tmp_path):
    client = trained_client(service)
    probe = _data(3, seed=5)
    try:
        saved = client.save_state(str(tmp_path / "state"), user_metadata={"note": "x"}).result()
        assert isinstance(saved, ports.SavedPath) and saved.path == str(tmp_path / "state")
        sampler_path = client.save_weights_for_sampler(str(tmp_path / "weights")).result().path
        expected = client.forward(probe).result()
        greedy = SamplingParams(max_tokens=5, temperature=0.0, stop=[])
        prompt = probe[0].model_input
        expected_tokens = client.save_weights_and_get_sampling_client().sample(prompt, 1, greedy).result()
    finally:
        client.close()
    for restored in (
        service.create_training_client_from_state(saved.path),
        service.create_training_client_from_state_with_optimizer(saved.path),
    ):
        try:
            assert restored.get_info().lora_rank == 4
            got = restored.forward(probe).result()
            for a, b in zip(got.loss_fn_outputs, expected.loss_fn_outputs, strict=True):
                np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-6)
        finally:
            restored.close()
    sc = service.create_sampling_client(model_path=sampler_path)
    assert sc.sample(prompt, 1, greedy).result().sequences[0].tokens == expected_tokens.sequences[0].tokens
    sc.close()


def test_load_state_with_and_without_the_optimizer(service, tmp_path):
    batch, probe = _data(4, seed=7), _data(3, seed=8)
    adam = AdamParams(learning_rate=1e-2)

    def step_then_score(client):
        client.forward_backward(batch)
        client.optim_step(adam)
        return [o["logprobs"] for o in client.forward(probe).result().loss_fn_outputs]

    client = trained_client(service, steps=3)
    try:
        path = client.save_state(str(tmp_path / "s")).result().path
        expected = step_then_score(client)
    finally:
        client.close()
    with_opt, weights_only = (service.create_lora_training_client(MODEL, 4) for _ in range(2))
    try:
        meta = with_opt.load_state_with_optimizer(path).result()
        assert meta["model_name"] == MODEL and meta["lora"]["rank"] == 4
        weights_only.load_state(path, weights_only=True).result()
        for a, b in zip(step_then_score(with_opt), expected, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
        # a fresh optimizer (Adam's first step) moves the weights elsewhere
        moved = step_then_score(weights_only)
        assert max(float(np.abs(a - b).max()) for a, b in zip(moved, expected)) > 1e-4
    finally:
        with_opt.close()
        weights_only.close()


def test_forward_topk_gives_the_most_likely_next_tokens(service):
    client = trained_client(service)
    try:
        data = _data(3, seed=6)
        full = client.forward(
            [Datum(d.model_input, {**d.loss_fn_inputs, "weights": np.ones(d.length)}) for d in data]
        ).result()
        top = client.forward_topk(data, 3).result()
        for d, (ids_TK, lp_TK), out in zip(data, top, full.loss_fn_outputs, strict=True):
            assert ids_TK.shape == lp_TK.shape == (d.length, 3)
            assert (np.diff(lp_TK, axis=1) <= 1e-6).all()  # best first
            # the target's log-prob never beats the best one
            assert (out["logprobs"] <= lp_TK[:, 0] + 1e-5).all()
    finally:
        client.close()
