"""Bad requests come back as errors the SDK raises (or Tinker error results over plain HTTP),
and the server keeps serving after them."""

import httpx
import numpy as np
import pytest
import tinker
from tinker import types

from tests.serve.conftest import sdk_datums
from tests.serve.tiny_model import CONTEXT


def retrieve(url, request_id):
    r = httpx.post(f"{url}/api/v1/retrieve_future", json={"request_id": request_id}, timeout=30)
    assert r.status_code == 200
    return r.json()


@pytest.fixture
def fresh(server, service_client):
    """A new training client (a failed request poisons an SDK TrainingClient)."""
    return service_client.create_lora_training_client(base_model=server.cfg.base.model, rank=8).result()


def test_unknown_loss(fresh):
    data, _ = sdk_datums(2, seed=0)
    with pytest.raises(tinker.RequestFailedError, match="loss_fn 'stable_reinforce' is not supported"):
        fresh.forward_backward(data, "stable_reinforce").result()


def test_missing_loss_input(fresh):
    data, _ = sdk_datums(2, seed=0)  # cross-entropy inputs only: no logprobs / advantages
    with pytest.raises(tinker.RequestFailedError, match="advantages"):
        fresh.forward_backward(data, "importance_sampling").result()


def test_datum_longer_than_the_context(fresh):
    n = CONTEXT + 10
    datum = types.Datum(
        model_input=types.ModelInput.from_ints([1] * n),
        loss_fn_inputs={"target_tokens": np.ones(n, np.int64), "weights": np.ones(n, np.float32)},
    )
    with pytest.raises(tinker.RequestFailedError, match=rf"data\[0\].model_input has {n} tokens.*{CONTEXT}"):
        fresh.forward_backward([datum], "cross_entropy").result()


def test_wrong_shapes(fresh):
    datum = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={"target_tokens": np.ones(3, np.int64), "weights": np.ones(5, np.float32)},
    )
    with pytest.raises(tinker.RequestFailedError, match=r"data\[0\].*weights"):
        fresh.forward_backward([datum], "cross_entropy").result()


def test_unknown_ids(server, service_client):
    with pytest.raises(tinker.NotFoundError, match="does not exist"):
        service_client.create_sampling_client(model_path="tinker://nope:train:0/sampler_weights/x").result()
    r = httpx.post(
        f"{server.url}/api/v1/optim_step", json={"model_id": "nope:train:0", "seq_id": 1, "adam_params": {}}
    )
    assert r.status_code == 200
    err = retrieve(server.url, r.json()["request_id"])
    assert err["category"] == "user" and "nope:train:0" in err["error"]
    r = httpx.post(f"{server.url}/api/v1/get_info", json={"model_id": "nope:train:0"})
    assert r.status_code == 404 and "nope:train:0" in r.json()["error"]
    assert "unknown request_id" in retrieve(server.url, "no-such-request")["error"]


def test_malformed_bodies(server):
    r = httpx.post(
        f"{server.url}/api/v1/forward_backward",
        content=b"\xff\x00 definitely not a protobuf",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200
    err = retrieve(server.url, r.json()["request_id"])
    assert err["category"] == "user" and "ForwardBackwardRequest" in err["error"]
    r = httpx.post(f"{server.url}/api/v1/create_model", content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = httpx.post(f"{server.url}/api/v1/create_model", json=[1, 2])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]
    r = httpx.post(f"{server.url}/api/v1/create_model", json={"session_id": "s", "model_seq_id": "zero"})
    err = retrieve(server.url, r.json()["request_id"])
    assert "model_seq_id must be int" in err["error"]
    assert httpx.get(f"{server.url}/api/v1/no_such_endpoint").status_code == 404


def test_server_still_serves(server, service_client):
    assert httpx.get(f"{server.url}/api/v1/healthz").json() == {"status": "ok"}
    caps = tinker.RestClient(base_url=server.url, api_key="tml-dummy").get_server_capabilities().result()
    assert server.cfg.base.model in [m.model_name for m in caps.supported_models]
    tc = service_client.create_lora_training_client(base_model=server.cfg.base.model, rank=8).result()
    data, _ = sdk_datums(6, seed=1)
    assert np.isfinite(tc.forward_backward(data, "cross_entropy").result().metrics["loss:sum"])
