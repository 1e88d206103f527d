"""`backend=tinker` without a server: the config syntax, its one-line errors, and the custom-loss
method's gradient (checked against the hand-derived one). The server-backed checks are in
`test_tinker.py` and `test_tinker_recipes.py` (slow)."""

import socket

import jax.numpy as jnp
import numpy as np
import pytest

import jaxcook
from jaxcook.backends import BackendConfig, BackendError, make_service
from jaxcook.backends.tinker import checkpoint_name
from jaxcook.backends.tinker_custom import LogprobGradient, builtin_loss
from jaxcook.config import config_from_dict, config_to_dict
from jaxcook.workflows.common import ModelOptions
from tests.engine.tiny import random_datums


def test_backend_short_name_and_dotted_keys():
    cfg = jaxcook.make_config("sft", tiny=True, overrides=["backend=tinker", "backend.base_url=http://h:1"])
    assert cfg.model.backend == BackendConfig(name="tinker", base_url="http://h:1")
    assert jaxcook.make_config("dpo", overrides={"backend": "tinker"}).model.backend.name == "tinker"
    assert jaxcook.make_config("rl", overrides=["model.backend=tinker"]).model.backend.name == "tinker"
    assert jaxcook.make_config("sft", overrides=["model.backend=local"]).model.backend == BackendConfig()
    assert ModelOptions(backend="tinker").backend == BackendConfig(name="tinker")  # Python, as before
    # a config.json written when `model.backend` was a string still loads
    data = config_to_dict(jaxcook.make_config("sft"))
    data["model"]["backend"] = "local"
    assert config_from_dict(type(jaxcook.make_config("sft")), data).model.backend == BackendConfig()


def test_bad_backend_keys_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^model.backend: unknown backend 'tinkr'; valid: local, tinker$"):
        jaxcook.make_config("sft", tiny=True, overrides=["backend=tinkr"])
    with pytest.raises(ValueError, match=r"^unknown config key 'model.backend.bas_url'.*Did you mean"):
        jaxcook.make_config("sft", tiny=True, overrides=["backend=tinker", "backend.bas_url=x"])
    with pytest.raises(BackendError, match=r"^backend.base_url applies to a remote backend"):
        make_service(BackendConfig(base_url="http://127.0.0.1:1"))
    with pytest.raises(BackendError, match=r"^backend.base_url 'ftp://x' is not an http\(s\):// URL$"):
        make_service(BackendConfig(name="tinker", base_url="ftp://x"))


def test_an_unreachable_base_url_is_a_one_line_error(capsys, monkeypatch):
    from tests.test_cli import _train_module

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TINKER_API_KEY", "tml-dummy")
    argv = ["--recipe", "sft", "--tiny", "backend=tinker", f"backend.base_url=http://127.0.0.1:{port}"]
    with pytest.raises(SystemExit) as exit_info:
        _train_module().main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"train.py: error: backend.base_url http://127.0.0.1:{port}: cannot connect"), err


def squared(logp_BT, batch):
    w_BT = batch.inputs["weights"] * batch.mask_BT
    loss = jnp.sum(w_BT * (logp_BT + 1.0) ** 2)
    return loss, {"loss:sum": loss}


def test_the_gradient_sent_back_is_the_custom_losss_gradient():
    """L = sum_t w_t (logp_t + 1)^2 has dL/dlogp_t = 2 w_t (logp_t + 1), datum by datum; and for
    cross_entropy (L = -sum w logp) the gradient is -w: the weights sent back are w themselves."""
    data = random_datums(5, seed=0)  # more datums than the batch_size hint: a bucket of their own
    rng = np.random.default_rng(1)
    logprobs = [-rng.random(d.length).astype(np.float32) * 5 for d in data]
    gradient = LogprobGradient(max_length=16, batch_size=4)
    loss, metrics, grads = gradient(squared, data, logprobs)
    w = [d.loss_fn_inputs["weights"] for d in data]
    want = sum(float(np.sum(wi * (lp + 1.0) ** 2)) for wi, lp in zip(w, logprobs))
    assert loss == pytest.approx(want, rel=1e-6) and metrics["loss:sum"] == pytest.approx(want, rel=1e-6)
    for g, wi, lp, d in zip(grads, w, logprobs, data, strict=True):
        assert g.shape == (d.length,)
        np.testing.assert_allclose(g, 2 * wi * (lp + 1.0), rtol=1e-6, atol=1e-6)
    _, _, ce_grads = gradient(builtin_loss("cross_entropy", None), data, logprobs)
    for g, wi in zip(ce_grads, w, strict=True):
        np.testing.assert_allclose(-g, wi, atol=1e-7)
    assert builtin_loss("dpo", {"beta": 0.1}) is builtin_loss("dpo", {"beta": 0.1})  # compiled once


def test_checkpoint_names_from_the_ports_names():
    assert checkpoint_name("/runs/sft/checkpoints/12") == "12"
    assert checkpoint_name("my run!") == "my_run_"
    assert checkpoint_name(".hidden") == "_.hidden"
