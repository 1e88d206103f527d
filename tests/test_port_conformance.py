"""Every workflow runs end to end on a backend that offers nothing but the ports.

The strict backend (tests/strict_port.py) wraps the local one: its service, training and
sampling clients answer only the methods of `jaxcook.ports.ServiceClient` / `TrainingClient` /
`SamplingClient` and raise `AttributeError` on anything else. Each recipe's tiny variant (and
off-policy distillation's) must run to its final checkpoint on it, touching no other attribute,
and close every training and sampling client it was handed.
"""

import dataclasses

import pytest

import jaxcook
from jaxcook import ports
from tests.strict_port import STRICT, StrictProxy, install, on_strict_backend

CASES = {
    "sft": ("sft", {}),
    "rl-sync": ("rl", {"mode": "sync", "kl_penalty_coef": 0.1}),
    "rl-stream": ("rl", {"mode": "stream"}),
    "rl-async": ("rl", {"mode": "async"}),
    "rl-multiturn": ("rl_multiturn", {}),
    "dpo": ("dpo", {}),
    "reward-model": ("reward_model", {}),
    "distill-on-policy": ("distill", {}),
    "prompt-distill": ("prompt_distill", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_workflow_runs_on_the_ports_alone(case, tmp_path, monkeypatch):
    ledger = install(monkeypatch)
    recipe, overrides = CASES[case]
    cfg = jaxcook.make_config(recipe, tiny=True, overrides={"run.log_dir": str(tmp_path / case), **overrides})
    result = jaxcook.run_config(recipe, on_strict_backend(cfg))
    assert ledger.violations == []
    assert result.final_checkpoint and result.metrics
    origins = {c.origin for c in ledger.clients}
    assert "ServiceClient.create_lora_training_client" in origins, origins
    assert ledger.unclosed() == []


def test_off_policy_distillation_runs_on_the_ports_alone(tmp_path, monkeypatch):
    from jaxcook.distill.off_policy import train
    from tests.distill.test_off_policy import tiny_config

    ledger = install(monkeypatch)
    result = train(on_strict_backend(tiny_config(tmp_path)))
    assert ledger.violations == []
    assert any("train/nll" in r for r in result.metrics)
    assert ledger.clients and ledger.unclosed() == []


def test_a_run_that_fails_closes_its_client_too(tmp_path, monkeypatch):
    ledger = install(monkeypatch)
    overrides = {"run.log_dir": str(tmp_path), "batch_size": 100000}
    cfg = jaxcook.make_config("sft", tiny=True, overrides=overrides)
    with pytest.raises(ValueError, match="fewer than batch_size=100000"):
        jaxcook.run_config("sft", on_strict_backend(cfg))
    assert [c.origin for c in ledger.clients] == ["ServiceClient.create_lora_training_client"]
    assert ledger.unclosed() == []


def test_the_proxy_refuses_what_the_port_lacks(monkeypatch):
    ledger = install(monkeypatch)
    from jaxcook.backends import make_service

    service = make_service(STRICT, max_length=64, batch_size=2)
    client = service.create_lora_training_client("tiny-random-smollm2", rank=2)
    try:
        assert isinstance(client, StrictProxy) and isinstance(client, ports.TrainingClient)
        with pytest.raises(AttributeError, match="'current_state' is not a method of the port Training"):
            client.current_state()
        assert getattr(client, "buckets", None) is None  # a defaulted getattr is refused and recorded too
        sampler = client.save_weights_and_get_sampling_client()
        with pytest.raises(AttributeError, match="'context_window' is not a method of the port Sampling"):
            _ = sampler.context_window
        sampler.close()
    finally:
        client.close()
    assert ledger.violations == [
        "TrainingClient.current_state",
        "TrainingClient.buckets",
        "SamplingClient.context_window",
    ]


def test_the_proxy_records_which_clients_were_closed(monkeypatch):
    ledger = install(monkeypatch)
    from jaxcook.backends import make_service

    service = make_service(STRICT, max_length=64, batch_size=2)
    client = service.create_lora_training_client("tiny-random-smollm2", rank=2)
    sampler = client.save_weights_and_get_sampling_client()
    assert ledger.unclosed() == [
        "ServiceClient.create_lora_training_client",
        "TrainingClient.save_weights_and_get_sampling_client",
    ]
    sampler.close()
    assert ledger.unclosed() == ["ServiceClient.create_lora_training_client"]
    client.close()
    assert ledger.unclosed() == []


def test_every_recipe_config_carries_the_backend_option():
    from jaxcook.backends import BackendConfig
    from jaxcook.recipes import RECIPES

    for name in RECIPES:
        cfg = jaxcook.make_config(name, tiny=True)
        assert cfg.model.backend == BackendConfig(name="local"), name
        assert dataclasses.replace(cfg.model, backend="local") == cfg.model


def test_an_unknown_backend_is_a_one_line_error_listing_the_valid_ones():
    from jaxcook.backends import make_service

    with pytest.raises(ValueError, match=r"^model.backend: unknown backend 'tinkr'; valid: local, tinker$"):
        jaxcook.make_config("sft", tiny=True, overrides={"model.backend": "tinkr"})
    with pytest.raises(ValueError, match=r"^unknown backend 'tinkr'; valid: local, tinker$"):
        make_service("tinkr")
