"""Logits parity with transformers for Mistral, Qwen3-MoE and Gemma 3 on tiny random configs:
padded batches, packed rows, the router's load-balancing loss, and config errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.models import ConfigError, ModelConfig, load
from tests.models.families import CASES, hf_logits, pack, padded_batch, save_random_hf


def ours(model, tokens, positions=None, segments=None):
    if positions is None:
        positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    return np.asarray(model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segments)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_padded_and_packed_logits_match_transformers(tmp_path, case):
    hf = save_random_hf(tmp_path, case)
    tokens, mask = padded_batch()
    ref = hf_logits(hf, tokens, mask)
    model = load(str(tmp_path), tokenizer=False).model
    valid = mask.astype(bool)
    assert np.abs(ours(model, tokens, None, mask)[valid] - ref[valid]).max() <= 1e-4
    lengths = mask.sum(1)
    packed = ours(model, *pack(tokens, mask, [1, 2, 0]))[0]
    want = np.concatenate([ref[1, : lengths[1]], ref[2, : lengths[2]], ref[0, : lengths[0]]])
    assert np.abs(packed - want).max() <= 1e-4


def test_sliding_window_changes_mistral_logits(tmp_path):
    """The window (9) is shorter than row 0 (40 tokens): without it the logits differ."""
    save_random_hf(tmp_path / "w", "mistral")
    hf_cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    tokens, mask = padded_batch()
    windowed = ours(load(str(tmp_path / "w"), tokenizer=False).model, tokens, None, mask)
    hf_cfg["sliding_window"] = None
    (tmp_path / "w" / "config.json").write_text(json.dumps(hf_cfg))
    full = ours(load(str(tmp_path / "w"), tokenizer=False).model, tokens, None, mask)
    assert np.abs(windowed[0, :9] - full[0, :9]).max() < 1e-5  # within the window: the same
    assert np.abs(windowed[0, 20:] - full[0, 20:]).max() > 1e-3


@pytest.mark.parametrize("case", ["qwen3_moe", "gpt_oss"])
def test_router_aux_loss_matches_transformers(tmp_path, case):
    import torch

    hf = save_random_hf(tmp_path, case, output_router_logits=True, router_aux_loss_coef=0.01)
    tokens, mask = padded_batch()
    with torch.no_grad():
        want = float(hf(torch.tensor(tokens), attention_mask=torch.tensor(mask)).aux_loss)
    model = load(str(tmp_path), tokenizer=False).model
    assert model.config.moe.aux_loss_coef == 0.01
    positions = np.broadcast_to(np.arange(40), tokens.shape)
    _, aux = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask), return_aux=True)
    assert abs(float(aux) - want) <= 1e-5 * max(1.0, abs(want))
    assert want > 1.0  # (E * sum_e f_e p_e is 1 when perfectly balanced; a real value is tested)


def test_unsupported_fields_are_errors_naming_them(tmp_path):
    save_random_hf(tmp_path, "qwen3_moe")
    hf_cfg = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ConfigError, match="'mystery_field'"):
        ModelConfig.from_hf({**hf_cfg, "mystery_field": 1}, source="x/config.json")
    with pytest.raises(ConfigError, match="mlp_only_layers"):
        ModelConfig.from_hf({**hf_cfg, "mlp_only_layers": [0]}, source="x/config.json")
    with pytest.raises(ConfigError, match="use_sliding_window"):
        ModelConfig.from_hf({**hf_cfg, "use_sliding_window": True}, source="x/config.json")
    gemma = {**CASES["gemma3"][2], "model_type": "gemma3_text", "vocab_size": 8, "hidden_size": 8}
    gemma.update(intermediate_size=8, num_hidden_layers=3, num_attention_heads=1)
    with pytest.raises(ConfigError, match="final_logit_softcapping"):
        ModelConfig.from_hf({**gemma, "final_logit_softcapping": 30.0}, source="g/config.json")
    mistral = {"model_type": "mistral", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8}
    mistral.update(num_hidden_layers=1, num_attention_heads=1, hidden_act="gelu")
    with pytest.raises(ConfigError, match="hidden_act"):
        ModelConfig.from_hf(mistral, source="m/config.json")


def test_aux_loss_coef_adds_the_loss_gradient(tmp_path):
    """With `aux_loss_coef`, the gradient of any objective is that of objective + coef x aux."""
    import dataclasses

    import jax
    from flax import nnx

    save_random_hf(tmp_path, "qwen3_moe")
    model = load(str(tmp_path), tokenizer=False).model
    graphdef, params = nnx.split(model)
    moe = dataclasses.replace(model.config.moe, aux_loss_coef=0.3)
    with_aux = load(str(tmp_path), tokenizer=False).model
    with_aux.config = dataclasses.replace(model.config, moe=moe)
    graphdef_aux, _ = nnx.split(with_aux)
    tokens, mask = padded_batch()
    args = (jnp.asarray(tokens), jnp.asarray(np.broadcast_to(np.arange(40), tokens.shape)), jnp.asarray(mask))

    def objective(graphdef, params, add_aux):
        h, aux = nnx.merge(graphdef, params)(*args, return_aux=True)
        return jnp.sum(h * h) + (0.3 * aux if add_aux else 0.0)

    grad = jax.jit(jax.grad(objective, argnums=1), static_argnums=(0, 2))
    want = grad(graphdef, params, True)
    got = grad(graphdef_aux, params, False)
    base = grad(graphdef, params, False)
    router = lambda g: np.asarray(g["layers"]["mlp"]["gate"]["kernel"][...])  # noqa: E731
    np.testing.assert_allclose(router(got), router(want), rtol=1e-5, atol=1e-7)
    assert np.abs(router(want) - router(base)).max() > 1e-6  # the aux term is not negligible


def test_gemma3_transformers4_layout_reads_pattern_and_local_theta():
    """Hub Gemma 3 configs predate `layer_types`: every 6th layer is global; local rope base apart."""
    hf = {
        "model_type": "gemma3_text",
        "vocab_size": 8,
        "hidden_size": 8,
        "intermediate_size": 8,
        "num_hidden_layers": 7,
        "num_attention_heads": 1,
        "head_dim": 4,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window": 512,
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256,
        "cache_implementation": "hybrid",
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "hidden_activation": "gelu_pytorch_tanh",
    }
    cfg = ModelConfig.from_hf(hf)
    assert cfg.sliding_layers() == (True,) * 5 + (False, True)
    assert (cfg.rope_theta, cfg.local_rope_theta, cfg.sliding_window) == (1_000_000.0, 10_000.0, 512)
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 8.0}
    assert cfg.tie_word_embeddings and cfg.norm_offset == 1.0 and cfg.query_pre_attn_scalar == 256
