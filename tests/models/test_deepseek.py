"""DeepSeek V3 / Kimi K2 beyond logits parity (`test_family_parity`) and the end-to-end path
(`test_family_training`): absorbed equals expanded latent attention, the compressed cache, the
decoder's cached path, group-limited routing by hand, MTP tensors skipped, the correction bias
never trained, and the config reader's errors and hub layouts."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcook.models import ConfigError, ModelConfig, init_cache, load
from jaxcook.models.config import MlaConfig, MoeConfig
from jaxcook.models.deepseek import DeepseekSource, sigmoid_group_topk
from jaxcook.models.mla import absorbed_attention, absorbs, expanded_attention
from tests.models.families import save_random_hf

# DeepSeek-V3(.1)'s config.json as the hub ships it (transformers-4 layout), minus FP8 (`FP8`).
HUB_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"},
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}
# Kimi K2: the same architecture under model_type kimi_k2 (one expert group, 1 dense layer).
HUB_KIMI = {
    **HUB_V3,
    "model_type": "kimi_k2",
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "pretraining_tp": 1,
    "n_group": 1,
    "topk_group": 1,
    "n_routed_experts": 384,
    "first_k_dense_replace": 1,
    "num_attention_heads": 64,
    "num_key_value_heads": 64,
    "num_nextn_predict_layers": 0,
    "routed_scaling_factor": 2.827,
    "rope_theta": 50000.0,
    "vocab_size": 163840,
}


# DeepSeek-V3.1's quantization_config (V3's lacks scale_fmt)
FP8 = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "scale_fmt": "ue8m0",
    "weight_block_size": [128, 128],
}


def test_fp8_hub_config_reads_its_block_and_exports_unquantised():
    v3 = ModelConfig.from_hf({**HUB_V3, "quantization_config": FP8})
    assert v3.fp8_block_size == (128, 128)
    assert "quantization_config" not in v3.to_hf() and ModelConfig.from_hf(HUB_V3).fp8_block_size is None


def test_hub_configs_read_and_write_back_as_deepseek_v3():
    v3 = ModelConfig.from_hf(HUB_V3)
    assert v3.mla == MlaConfig(
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128
    )
    assert (v3.head_dim, v3.num_kv_heads, v3.first_dense_layers, v3.stacked_layers) == (64, 128, 3, 58)
    assert (v3.moe.n_group, v3.moe.topk_group, v3.moe.shared_experts, v3.moe.top_k) == (8, 4, 1, 8)
    assert v3.rope_scaling["rope_type"] == "yarn" and v3.rope_scaling["mscale_all_dim"] == 1.0
    kimi = ModelConfig.from_hf(HUB_KIMI)
    assert (kimi.moe.num_experts, kimi.moe.n_group, kimi.first_dense_layers) == (384, 1, 1)
    assert kimi.moe.routed_scaling_factor == 2.827
    hf = kimi.to_hf()
    assert hf["model_type"] == "deepseek_v3" and hf["architectures"] == ["DeepseekV3ForCausalLM"]
    assert ModelConfig.from_hf(json.loads(json.dumps(hf))).moe == kimi.moe


@pytest.mark.parametrize(
    "change, field",
    [
        ({"quantization_config": {**FP8, "quant_method": "gptq"}}, r"\.quant_method 'gptq'"),
        ({"quantization_config": {**FP8, "fmt": "e5m2"}}, r"quantization_config\.fmt 'e5m2'"),
        ({"quantization_config": {**FP8, "activation_scheme": "static"}}, r"\.activation_scheme"),
        ({"quantization_config": {**FP8, "weight_block_size": [128]}}, r"\.weight_block_size"),
        ({"quantization_config": {**FP8, "weight_block_size": None}}, r"\.weight_block_size"),
        ({"quantization_config": {**FP8, "expert_dtype": "fp4"}}, r"\.expert_dtype"),
        ({"quantization_config": {**FP8, "modules_to_convert": ["embed"]}}, "'modules_to_convert'"),
        ({"topk_method": "group_limited_greedy"}, "topk_method"),
        ({"scoring_func": "softmax"}, "scoring_func"),
        ({"rope_scaling": {"type": "linear", "factor": 4.0}}, "'linear'"),
        ({"num_key_value_heads": 16}, "num_key_value_heads"),
        ({"attention_bias": True}, "attention_bias"),
        ({"moe_layer_freq": 2}, "moe_layer_freq"),
        ({"mystery_field": 1}, "'mystery_field'"),
        ({"n_group": 3}, "n_group"),
    ],
)
def test_unsupported_fields_are_errors_naming_them(change, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_hf({**HUB_V3, **change}, source="ds/config.json")


def test_compressed_cache_holds_latents_not_heads():
    """Per layer and slot: kv_lora_rank + qk_rope_head_dim = 512 + 64 numbers (not 128 x 320)."""
    cfg = ModelConfig.from_hf({**HUB_V3, "num_hidden_layers": 4, "first_k_dense_replace": 1})
    cache = jax.eval_shape(lambda: init_cache(cfg, batch=2, max_len=10))
    assert cache["k"].shape == (4, 2, 10, 1, 512) and cache["v"].shape == (4, 2, 10, 1, 64)
    # the cost rule: decode absorbs; a 4096-token prefill (S = T) expands
    assert absorbs(cfg.mla, T=1, S=4096) and not absorbs(cfg.mla, T=4096, S=4096)


def test_absorbed_attention_equals_expanded():
    """(q W_uk^T) . c + q_r . k_r and (p . c) W_uv: the same attention as with expanded heads."""
    B, T, S, H, r, dn, dr, dv = 2, 3, 7, 4, 16, 8, 4, 6
    rng = np.random.default_rng(0)  # numpy inputs: eager jax ops each compile
    q_nope, q_rope = rng.normal(size=(B, T, H, dn)), rng.normal(size=(B, T, H, dr))
    c, k_rope, w = (
        rng.normal(size=(B, S, r)),
        rng.normal(size=(B, S, dr)),
        rng.normal(size=(r, H, dn + dv)) * 0.3,
    )
    mask = np.tril(np.ones((T, S), bool), k=S - T)[None].repeat(B, 0)
    mask[1, :, :2] = False  # row 1: two padding keys

    @jax.jit
    def both(q_nope, q_rope, c, k_rope, w):
        kv = jnp.einsum("bsc,chx->bshx", c, w)
        want = expanded_attention(q_nope, q_rope, kv[..., :dn], k_rope, kv[..., dn:], mask, 0.3)
        q_lat = jnp.einsum("bthn,chn->bthc", q_nope, w[..., :dn])
        lat = absorbed_attention(q_lat, q_rope, c, k_rope, mask, 0.3)
        return jnp.einsum("bthc,chv->bthv", lat, w[..., dn:]), want

    got, want = both(*(np.float32(x) for x in (q_nope, q_rope, c, k_rope, w)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_cached_prefill_and_decode_equal_the_full_forward(tmp_path):
    """The decoder's cached path (dense prefix included): 5 prompt tokens, then 3 steps."""
    save_random_hf(tmp_path, "deepseek_v3")
    model = load(str(tmp_path), tokenizer=False).model
    graphdef, state = nnx.split(model)

    @jax.jit
    def call(state, tokens, positions, cache):
        m = nnx.merge(graphdef, state)
        h, cache = m(tokens, positions, jnp.ones_like(tokens), cache=cache)
        return m.unembed(h), cache

    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, 8)))
    full = np.asarray(jax.jit(lambda s, t: nnx.merge(graphdef, s).logits(t))(state, tokens))
    logits, cache = call(
        state, tokens[:, :5], jnp.broadcast_to(jnp.arange(5), (2, 5)), init_cache(model.config, 2, 8)
    )
    got = [np.asarray(logits)]
    for t in range(5, 8):
        logits, cache = call(state, tokens[:, t : t + 1], jnp.full((2, 1), t), cache)
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, atol=1e-5)


def test_group_limited_routing_by_hand():
    """E = 4 in 2 groups, keep 1 group, top-2. Scores s = sigmoid(logits); the bias +1 on expert 0
    moves group 0's top-2 sum of (s + b) above group 1's, so the choice is {0, 1} though experts 2
    and 3 score higher; weights are s, normalised, times 2."""
    s = np.asarray([[0.4, 0.3, 0.8, 0.7]], np.float32)
    logits = np.log(s / (1 - s))
    route = jax.jit(sigmoid_group_topk, static_argnums=2)
    moe = MoeConfig(
        num_experts=4, top_k=2, intermediate_size=1, style="deepseek_v3", n_group=2, topk_group=1,
        routed_scaling_factor=2.0,
    )  # fmt: skip
    w, idx, _ = route(logits, np.asarray([1.0, 0.0, 0.0, 0.0], np.float32), moe)
    assert sorted(np.asarray(idx)[0].tolist()) == [0, 1]  # group 0: 1.4 + 0.3 > group 1: 0.8 + 0.7
    w = dict(zip(np.asarray(idx)[0].tolist(), np.asarray(w)[0].tolist(), strict=True))
    np.testing.assert_allclose([w[0], w[1]], [2 * 0.4 / 0.7, 2 * 0.3 / 0.7], rtol=1e-5)
    _, idx, _ = route(logits, np.zeros(4, np.float32), moe)  # no bias: group 1, experts {2, 3}
    assert sorted(np.asarray(idx)[0].tolist()) == [2, 3]


class _Dict:
    def __init__(self, tensors):
        self.tensors = tensors

    def names(self):
        return list(self.tensors)

    def shape(self, name):
        return self.tensors[name].shape

    def get(self, name):
        return self.tensors[name]


def test_source_skips_mtp_layers_stacks_experts_and_renames_the_bias():
    cfg = ModelConfig.from_hf({**HUB_V3, "num_hidden_layers": 2, "first_k_dense_replace": 1})
    one = np.ones((2, 3), np.float32)
    src = _Dict(
        {
            "model.layers.1.mlp.gate.e_score_correction_bias": np.arange(256.0),
            **{f"model.layers.1.mlp.experts.{e}.up_proj.weight": one * e for e in range(256)},
            "model.layers.2.self_attn.kv_b_proj.weight": one,  # the MTP module (layer L)
        }
    )
    ours = DeepseekSource(src, cfg)
    assert sorted(ours.names()) == [
        "model.layers.1.mlp.experts.up_proj.weight",
        "model.layers.1.mlp.gate.e_score_correction.bias",
    ]
    assert ours.get("model.layers.1.mlp.experts.up_proj.weight")[0, 0, 5] == 5.0  # [out, in, E]


def test_correction_bias_is_loaded_but_never_a_trainable_param(tmp_path):
    save_random_hf(tmp_path, "deepseek_v3_plain")
    model = load(str(tmp_path), tokenizer=False).model
    bias = np.asarray(model.layers.mlp.gate.e_score_correction.bias[...])
    assert np.abs(bias).max() > 0.1  # the random (nonzero) buffer of the HF model was loaded
    trained = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    assert any("mlp.gate.kernel" in p for p in trained)  # full fine-tuning trains nnx.Params
    assert not any("e_score_correction" in p for p in trained)


@pytest.mark.slow
def test_remat_gradient_equals_plain_gradient(tmp_path):
    """`remat=True` (the dense prefix rematerialised too) changes no gradient."""
    save_random_hf(tmp_path, "deepseek_v3")
    graphdef, state = nnx.split(load(str(tmp_path), tokenizer=False).model)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 128, (2, 12)))
    positions = jnp.broadcast_to(jnp.arange(12), (2, 12))

    def loss(state, remat):
        h = nnx.merge(graphdef, state)(tokens, positions, jnp.ones_like(tokens), remat=remat)
        return jnp.sum(h * h)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    plain, remat = jax.tree.leaves(grad(state, False)), jax.tree.leaves(grad(state, True))
    assert any(float(jnp.abs(g).max()) > 0 for g in plain)
    for want, got in zip(plain, remat, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
