"""The real tinker SDK against the server: training equals the local client, several LoRA
clients share one base, save / load / resume, and a restart keeps the checkpoints."""

import numpy as np
import pytest
import tinker
from tinker import types

from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.types import AdamParams
from tests.serve.conftest import sdk_datums

ADAM = dict(learning_rate=1e-2)


def run_server_steps(tc, data, steps):
    """[(loss, per-datum logprobs)] of `steps` forward_backward + optim_step calls."""
    out = []
    for _ in range(steps):
        fb = tc.forward_backward(data, "cross_entropy")
        op = tc.optim_step(types.AdamParams(**ADAM))
        r = fb.result()
        op.result()
        out.append((r.metrics["loss:sum"], [o["logprobs"].to_numpy() for o in r.loss_fn_outputs]))
    return out


@pytest.fixture(scope="module")
def local_reference(server):
    """The local client on the same base, same LoRA init (rank 8, seed 5, alpha 32) and buckets."""
    lora = LoraConfig(rank=8, alpha=32.0, seed=5)
    tc = LocalTrainingClient.create(server.cfg.base.model, lora=lora, buckets=server.service.base.buckets)
    _, data = sdk_datums(6, seed=1)
    out = []
    for _ in range(3):
        r = tc.forward_backward(data, "cross_entropy").result()
        tc.optim_step(AdamParams(**ADAM)).result()
        out.append((r.metrics["loss:sum"], [o["logprobs"] for o in r.loss_fn_outputs]))
    tc.close()
    return out


def assert_same_run(got, want):
    for (loss_g, lp_g), (loss_w, lp_w) in zip(got, want, strict=True):
        assert abs(loss_g - loss_w) <= 1e-5 * max(1.0, abs(loss_w)), (loss_g, loss_w)
        for a, b in zip(lp_g, lp_w, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_training_lowers_the_loss_and_equals_the_local_client(server, service_client, local_reference):
    tc = service_client.create_lora_training_client(base_model=server.cfg.base.model, rank=8, seed=5).result()
    data, _ = sdk_datums(6, seed=1)
    got = run_server_steps(tc, data, 3)
    assert got[-1][0] < got[0][0] - 1.0  # the same batch three times: the loss falls
    assert_same_run(got, local_reference)


def test_adapters_share_the_base_and_train_independently(server, service_client, local_reference):
    a = service_client.create_lora_training_client(base_model=server.cfg.base.model, rank=8, seed=5).result()
    b = service_client.create_lora_training_client(
        base_model=server.cfg.base.model, rank=4, seed=9, train_mlp=False
    ).result()
    base = server.service.base
    for client in (a, b):
        frozen = server.service.registry.model(client.model_id).client.frozen
        assert all(x is y for x, y in zip(jax_leaves(frozen), jax_leaves(base.frozen), strict=True))
    data_a, _ = sdk_datums(6, seed=1)
    data_b, _ = sdk_datums(6, seed=2)
    got = []
    for _ in range(3):  # interleaved: b's steps must not leak into a
        fa, fb_ = a.forward_backward(data_a, "cross_entropy"), b.forward_backward(data_b, "cross_entropy")
        oa, ob = a.optim_step(types.AdamParams(**ADAM)), b.optim_step(types.AdamParams(learning_rate=0.1))
        r = fa.result()
        fb_.result(), oa.result(), ob.result()
        got.append((r.metrics["loss:sum"], [o["logprobs"].to_numpy() for o in r.loss_fn_outputs]))
    assert_same_run(got, local_reference)
    assert b.get_info().lora_rank == 4


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_forward_only_does_not_train(server, service_client):
    tc = service_client.create_lora_training_client(base_model=server.cfg.base.model, rank=8).result()
    data, _ = sdk_datums(6, seed=3)
    first = tc.forward(data, "cross_entropy").result().metrics["loss:sum"]
    tc.optim_step(types.AdamParams(**ADAM)).result()  # no gradient accumulated: no change
    again = tc.forward(data, "cross_entropy").result().metrics["loss:sum"]
    trained = tc.forward_backward(data, "cross_entropy").result().metrics["loss:sum"]
    assert first == again == trained


def test_save_load_resume(server, service_client, tmp_path):
    tc = service_client.create_lora_training_client(
        base_model=server.cfg.base.model, rank=8, seed=2, user_metadata={"renderer_name": "role_colon"}
    ).result()
    data, _ = sdk_datums(6, seed=4)
    run_server_steps(tc, data, 2)
    path = tc.save_state("after-2").result().path
    assert path == f"tinker://{tc.model_id}/weights/after-2"
    ((step3, _),) = run_server_steps(tc, data, 1)
    after3 = tc.forward(data, "cross_entropy").result().metrics["loss:sum"]

    resumed = service_client.create_training_client_from_state_with_optimizer(path).result()
    assert resumed.model_id != tc.model_id and ":train:" in resumed.model_id
    ((r3, _),) = run_server_steps(resumed, data, 1)
    r_after3 = resumed.forward(data, "cross_entropy").result().metrics["loss:sum"]
    assert r3 == pytest.approx(step3, abs=1e-5) and r_after3 == pytest.approx(after3, abs=1e-5)

    weights_only = service_client.create_training_client_from_state(path).result()
    ((w3, _),) = run_server_steps(weights_only, data, 1)
    w_after3 = weights_only.forward(data, "cross_entropy").result().metrics["loss:sum"]
    assert w3 == pytest.approx(step3, abs=1e-5)  # same weights ...
    assert abs(w_after3 - after3) > 1e-3  # ... but a fresh Adam state takes a different step

    rest = tinker.RestClient(base_url=server.url, api_key="tml-dummy")
    ids = [c.checkpoint_id for c in rest.list_checkpoints(tc.model_id).result().checkpoints]
    assert ids == ["weights/after-2"]
    run = rest.get_training_run_by_tinker_path(path).result()
    assert run.lora_rank == 8 and run.user_metadata == {"renderer_name": "role_colon"}
    info = rest.get_weights_info_by_tinker_path(path).result()
    assert info.is_lora and info.lora_rank == 8 and info.base_model == server.cfg.base.model

    # A second server on the same state dir (a restart) lists the run and resumes from it.
    from jaxcook.serve.server import ServerConfig, ServerThread

    cfg = ServerConfig(base=server.cfg.base, state_dir=server.cfg.state_dir, port=0, poll_timeout=10.0)
    with ServerThread(cfg) as again:
        rest2 = tinker.RestClient(base_url=again.url, api_key="tml-dummy")
        assert [c.tinker_path for c in rest2.list_checkpoints(tc.model_id).result().checkpoints] == [path]
        with tinker.ServiceClient(base_url=again.url, api_key="tml-dummy") as sc2:
            back = sc2.create_training_client_from_state_with_optimizer(path).result()
            ((b3, _),) = run_server_steps(back, data, 1)
            assert b3 == pytest.approx(step3, abs=1e-5)
