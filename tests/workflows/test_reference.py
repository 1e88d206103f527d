"""Reference log-probs through the port (a sampling client of the initial weights) line up with
the trainer's log-probs of the same targets, for the RL KL penalty and for DPO."""

import numpy as np
import pytest

from jaxcook.backends import make_service
from jaxcook.types import AdamParams, Datum
from jaxcook.workflows.preference import with_reference
from jaxcook.workflows.rl_train import reference_scorer
from tests.engine.tiny import random_datums


@pytest.fixture(scope="module")
def client():
    c = make_service("local", max_length=64, batch_size=4).create_lora_training_client(
        "tiny-random-smollm2", 4
    )
    yield c
    c.close()


def masked(data, key):
    """Datums whose last third of targets is marked in `key` (a prompt, then a completion)."""
    out = []
    for d in data:
        mark = (np.arange(d.length) >= d.length - max(1, d.length // 3)).astype(np.float32)
        out.append(Datum(d.model_input, {"target_tokens": d.loss_fn_inputs["target_tokens"], key: mark}))
    return out


def trainer_logprobs(client, data, key):
    probe = [
        Datum(
            d.model_input,
            {"target_tokens": d.loss_fn_inputs["target_tokens"], "weights": d.loss_fn_inputs[key]},
        )
        for d in data
    ]
    return [o["logprobs"] for o in client.forward(probe).result().loss_fn_outputs]


def test_kl_reference_scores_the_masked_targets_of_the_initial_weights(client):
    data = masked(random_datums(6, lengths=(6, 40), seed=0), "mask")
    reference = client.save_weights_and_get_sampling_client()
    expected = trainer_logprobs(client, data, "mask")
    train = [
        Datum(
            d.model_input,
            {"target_tokens": d.loss_fn_inputs["target_tokens"], "weights": d.loss_fn_inputs["mask"]},
        )
        for d in data
    ]
    client.forward_backward(train)
    client.optim_step(AdamParams(learning_rate=5e-2)).result()  # the policy moves on, the reference does not
    got = reference_scorer(reference)(data)
    moved = trainer_logprobs(client, data, "mask")
    for d, g, e, m in zip(data, got, expected, moved, strict=True):
        mask = d.loss_fn_inputs["mask"] > 0
        np.testing.assert_allclose(g[mask], e[mask], atol=1e-6)
        assert (g[~mask] == 0).all()
        assert np.abs(m[mask] - e[mask]).max() > 1e-4
    reference.close()


def test_dpo_reference_logprobs_are_the_weighted_targets(client):
    data = masked(random_datums(4, lengths=(6, 40), seed=1), "weights")
    reference = client.save_weights_and_get_sampling_client()
    expected = trainer_logprobs(client, data, "weights")
    for d, e in zip(with_reference(reference, data), expected, strict=True):
        w = d.loss_fn_inputs["weights"] > 0
        np.testing.assert_allclose(d.loss_fn_inputs["ref_logprobs"][w], e[w], atol=1e-6)
    reference.close()
