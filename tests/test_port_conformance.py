"""Every workflow runs end to end on a backend that offers nothing but the ports.

The strict backend (tests/strict_port.py) wraps the local one: its service, training and
sampling clients answer only the methods of `jaxcook.ports.ServiceClient` / `TrainingClient` /
`SamplingClient` and raise `AttributeError` on anything else. Each recipe's tiny variant (and
off-policy distillation's) must run to its final checkpoint on it, touching no other attribute.
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
    violations = install(monkeypatch)
    recipe, overrides = CASES[case]
    cfg = jaxcook.make_config(recipe, tiny=True, overrides={"run.log_dir": str(tmp_path / case), **overrides})
    result = jaxcook.run_config(recipe, on_strict_backend(cfg))
    assert violations == []
    assert result.final_checkpoint and result.metrics


def test_off_policy_distillation_runs_on_the_ports_alone(tmp_path, monkeypatch):
    from jaxcook.distill.off_policy import train
    from tests.distill.test_off_policy import tiny_config

    violations = install(monkeypatch)
    result = train(on_strict_backend(tiny_config(tmp_path)))
    assert violations == []
    assert any("train/nll" in r for r in result.metrics)


def test_the_proxy_refuses_what_the_port_lacks(monkeypatch):
    violations = install(monkeypatch)
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
    assert violations == [
        "TrainingClient.current_state",
        "TrainingClient.buckets",
        "SamplingClient.context_window",
    ]


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
