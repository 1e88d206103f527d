"""`backend=tinker` behind the ports, against a real `jaxcook serve` subprocess, driven through the
public `tinker` SDK: each check compares a call with the local backend on the same model, LoRA
init and data (losses and log-probs within 1e-5), or a state with the one it was saved from.

Slow (a server subprocess and two backends' compiles: about 3 minutes on 2 loaded cores), on
`.ci/run`. The recipes end to end are in `test_tinker_recipes.py` (slow); the checks that need
no server (config syntax, one-line errors, the custom-loss gradient) in `test_tinker_config.py`.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook import ports
from jaxcook.backends import BackendConfig, BackendError, make_service
from jaxcook.types import AdamParams, ModelInput, SamplingParams
from tests.backends.tinker_server import MODEL, serve, tinker_env
from tests.engine.tiny import random_datums

pytestmark = pytest.mark.slow

ADAM = AdamParams(learning_rate=1e-2)
TOL = 1e-5


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with tinker_env(), serve(tmp_path_factory.mktemp("tinker-serve")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def service(url):
    svc = make_service(BackendConfig(name="tinker", base_url=url), max_length=64, batch_size=4)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def local():
    return make_service("local", max_length=64, batch_size=4)


def pair(service, local, seed=3):
    """A Tinker client and a local one with the same LoRA init (rank 4, scale 1)."""
    return service.create_lora_training_client(MODEL, 4, seed=seed), local.create_lora_training_client(
        MODEL, 4, seed=seed
    )


def squared(logp_BT, batch):
    """A custom loss non-linear in the log-probs: L = sum_t w_t (logp_t + 1)^2."""
    w_BT = batch.inputs["weights"] * batch.mask_BT
    loss = jnp.sum(w_BT * (logp_BT + 1.0) ** 2)
    return loss, {"loss:sum": loss, "squared/weight": jnp.sum(w_BT)}


def test_the_service_and_its_clients_implement_the_ports(service):
    client = service.create_lora_training_client(MODEL, 4)
    try:
        assert isinstance(service, ports.ServiceClient) and isinstance(client, ports.TrainingClient)
        info = client.get_info()
        assert (info.model_name, info.is_lora, info.lora_rank) == (MODEL, True, 4)
        assert info.context_window > 0
        assert client.get_tokenizer().encode("2 + 3") == service.get_tokenizer(MODEL).encode("2 + 3")
        sc = client.save_weights_and_get_sampling_client()
        assert isinstance(sc, ports.SamplingClient)
        prompt = ModelInput.from_ints([1, 5, 9, 12])
        out = sc.sample(prompt, 2, SamplingParams(max_tokens=5, temperature=1.0, seed=0, stop=[])).result()
        assert [len(s.tokens) for s in out.sequences] == [5, 5]
        assert all(len(s.logprobs) == 5 and max(s.logprobs) <= 0 for s in out.sequences)
        (row,) = sc.compute_logprobs_many([prompt], prompt_logprobs_last_n=[2]).result()
        full = sc.compute_logprobs(prompt).result()
        assert row[:2] == [None, None] and row[2:] == full[2:] and full[0] is None
        # the sampler's prompt log-probs are the trainer's forward log-probs of the same tokens
        (datum,) = random_datums(1, lengths=(4, 5), seed=0)
        seq = [*datum.model_input.to_ints(), int(datum.loss_fn_inputs["target_tokens"][-1])]
        scored = sc.compute_logprobs(ModelInput.from_ints(seq)).result()
        trained = client.forward([datum]).result().loss_fn_outputs[0]["logprobs"]
        np.testing.assert_allclose(scored[1:], trained, atol=TOL)
        sc.close()
    finally:
        client.close()


def test_training_equals_the_local_backend(service, local):
    remote, here = pair(service, local)
    data = random_datums(6, seed=1)
    try:
        for _ in range(3):
            a, b = remote.forward_backward(data), here.forward_backward(data)
            remote.optim_step(ADAM), here.optim_step(ADAM)
            a, b = a.result(), b.result()
            assert a.metrics["loss:sum"] == pytest.approx(b.metrics["loss:sum"], rel=TOL, abs=TOL)
            for x, y in zip(a.loss_fn_outputs, b.loss_fn_outputs, strict=True):
                np.testing.assert_allclose(x["logprobs"], y["logprobs"], atol=TOL)
        first = a.metrics["loss:sum"]
        after = remote.forward(data).result().metrics["loss:sum"]
        assert after < first - 0.1  # the same batch three times: the loss falls
    finally:
        remote.close(), here.close()


def test_custom_loss_gradient_equals_the_local_backend(service, local):
    """forward + jax.grad here + weighted cross_entropy there == the local one-pass custom loss."""
    remote, here = pair(service, local, seed=4)
    data = random_datums(4, seed=2)  # the local custom loss takes one batch bucket (<= 4)
    try:
        before = here.forward(data).result().metrics["loss:sum"]
        a, b = remote.forward_backward_custom(data, squared), here.forward_backward_custom(data, squared)
        remote.optim_step(ADAM), here.optim_step(ADAM)
        a, b = a.result(), b.result()
        assert a.metrics["loss:sum"] == pytest.approx(b.metrics["loss:sum"], rel=TOL, abs=TOL)
        assert a.metrics["squared/weight"] == pytest.approx(b.metrics["squared/weight"], abs=TOL)
        assert "surrogate_loss:sum" in a.metrics
        got, want = remote.forward(data).result(), here.forward(data).result()
        assert abs(want.metrics["loss:sum"] - before) > 1e-2  # the step moved the weights visibly ...
        assert got.metrics["loss:sum"] == pytest.approx(want.metrics["loss:sum"], rel=TOL, abs=TOL)  # alike
        for x, y in zip(got.loss_fn_outputs, want.loss_fn_outputs, strict=True):
            np.testing.assert_allclose(x["logprobs"], y["logprobs"], atol=TOL)
    finally:
        remote.close(), here.close()


def test_save_load_through_tinker_paths(service):
    client = service.create_lora_training_client(MODEL, 4, seed=5)
    data = random_datums(4, seed=3)
    try:
        client.forward_backward(data), client.optim_step(ADAM)
        saved = client.save_state("/some/log/dir/checkpoints/1", user_metadata={"loop": {"step": 1}}).result()
        assert saved.path == f"tinker://{client.model_id}/weights/1"
        client.forward_backward(data)
        client.optim_step(ADAM)
        want = client.forward(data).result().metrics["loss:sum"]

        fresh = service.create_lora_training_client(MODEL, 4, seed=6)
        assert fresh.load_state_with_optimizer(saved.path).result() == {"loop": {"step": 1}}
        fresh.forward_backward(data)
        fresh.optim_step(ADAM)
        assert fresh.forward(data).result().metrics["loss:sum"] == pytest.approx(want, rel=TOL, abs=TOL)
        fresh.close()

        weights_only = service.create_training_client_from_state(saved.path)  # a fresh Adam state
        weights_only.forward_backward(data)
        weights_only.optim_step(ADAM)
        assert abs(weights_only.forward(data).result().metrics["loss:sum"] - want) > 1e-3
        weights_only.close()
    finally:
        client.close()


def test_service_errors_are_one_line(service):
    with pytest.raises(BackendError, match="LoRA adapters only"):
        service.create_full_training_client(MODEL)
    with pytest.raises(BackendError, match="create a LoRA client of 'nope'.*'nope' is not served here"):
        service.create_lora_training_client("nope", 4)
