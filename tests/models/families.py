"""Tiny random HF models of the families beyond the dense core (Mistral, Qwen3-MoE, GPT-OSS,
DeepSeek V3, Gemma 3), saved with transformers, plus padded and packed batches to compare logits
on."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 128
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
QWEN3_MOE = dict(
    head_dim=16,
    moe_intermediate_size=32,
    num_experts=8,
    num_experts_per_tok=2,
    norm_topk_prob=True,
    tie_word_embeddings=False,
)
CASES = {
    # a window shorter than the batch's sequences, so it matters
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=9, tie_word_embeddings=False)),
    "mistral_full": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=None)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", QWEN3_MOE),
    "qwen3_moe_unnormed": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", {**QWEN3_MOE, "norm_topk_prob": False}),
    "gpt_oss": (
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(
            head_dim=16,
            intermediate_size=32,
            num_local_experts=8,
            num_experts_per_tok=2,
            sliding_window=9,
            num_hidden_layers=3,
            tie_word_embeddings=False,
            max_position_embeddings=128,  # = factor x original context, as YaRN expects
            # YaRN with an original context shorter than the batch, so the scaling matters
            rope_parameters={
                "rope_type": "yarn",
                "factor": 8.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "original_max_position_embeddings": 16,
                "rope_theta": 150000.0,
                "truncate": False,
            },
        ),
    ),
    "deepseek_v3": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            num_hidden_layers=3,
            num_key_value_heads=4,
            q_lora_rank=48,
            kv_lora_rank=32,
            qk_nope_head_dim=16,
            qk_rope_head_dim=8,
            v_head_dim=12,
            moe_intermediate_size=32,
            n_routed_experts=8,
            n_shared_experts=1,
            num_experts_per_tok=2,
            n_group=4,
            topk_group=2,
            first_k_dense_replace=1,
            routed_scaling_factor=2.5,
            tie_word_embeddings=False,
            max_position_embeddings=128,  # = factor x original context
            # YaRN (original context shorter than the batch) with DeepSeek's softmax mscale
            rope_parameters={
                "rope_type": "yarn",
                "factor": 8.0,
                "mscale": 1.0,
                "mscale_all_dim": 0.7,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "original_max_position_embeddings": 16,
                "rope_theta": 10000.0,
            },
        ),
    ),
    # full-rank queries, plain rope without interleaving, one expert group, unnormalised weights
    "deepseek_v3_plain": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            num_hidden_layers=2,
            num_key_value_heads=4,
            q_lora_rank=None,
            kv_lora_rank=32,
            qk_nope_head_dim=16,
            qk_rope_head_dim=8,
            v_head_dim=16,
            moe_intermediate_size=32,
            n_routed_experts=8,
            n_shared_experts=2,
            num_experts_per_tok=3,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=0,
            norm_topk_prob=False,
            rope_interleave=False,
            tie_word_embeddings=False,
        ),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            head_dim=32,
            query_pre_attn_scalar=24,
            sliding_window=7,
            num_hidden_layers=3,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        ),
    ),
}


def save_random_hf(folder, case, seed=0, **overrides):
    """Save a random `case` model to `folder`; return it (eval mode, float32)."""
    config_cls, model_cls, extra = CASES[case]
    config = getattr(transformers, config_cls)(**{**BASE, **extra, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():  # random (not default) norm scales; a router sharp enough to matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            if name.endswith(("mlp.gate.weight", "mlp.router.weight")):
                p.normal_(0.0, 0.5)
            if name.endswith(("bias", "sinks")):  # GPT-OSS: biases and sinks start at zero
                p.copy_(torch.randn_like(p) * 0.5)
        for name, b in model.named_buffers():  # DeepSeek's routing bias (a buffer, zero at init)
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn_like(b) * 0.5)
    model.save_pretrained(folder)
    return model


def padded_batch(seed=0):
    """Tokens and attention mask [3, 40]: rows of 40, 23 and 7 real tokens, right-padded."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((3, 40), np.int64)
    mask = np.zeros((3, 40), np.int64)
    for i, n in enumerate([40, 23, 7]):
        tokens[i, :n] = rng.integers(0, VOCAB, n)
        mask[i, :n] = 1
    return tokens, mask


def hf_logits(model, tokens, mask):
    with torch.no_grad():
        return model(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()


def loads_like_its_twin(folder, twin_model, original):
    """Load the quantised checkpoint in `folder` with jaxcook: its logits equal transformers' on
    the dequantised `twin_model` (<= 1e-4) and differ from the unquantised `original`'s (the
    rounding shows); exports drop the quantisation. Returns the loaded model's config."""
    from jaxcook.models import load

    tokens, mask = padded_batch()
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    loaded = load(str(folder), tokenizer=False)
    assert "quantization_config" not in loaded.config.to_hf()  # exports are dequantised
    ours = np.asarray(loaded.model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))
    valid = mask.astype(bool)
    ref = hf_logits(twin_model.eval(), tokens, mask)
    assert np.abs(ours[valid] - ref[valid]).max() <= 1e-4
    assert np.abs(ref[valid] - hf_logits(original, tokens, mask)[valid]).max() > 1e-3
    return loaded.config


def pack(tokens, mask, rows):
    """`rows` of a padded batch packed into one row: (tokens, positions, segment ids) [1, T]."""
    lengths = mask.sum(1)
    toks = np.concatenate([tokens[r, : lengths[r]] for r in rows])[None]
    pos = np.concatenate([np.arange(lengths[r]) for r in rows])[None]
    seg = np.concatenate([np.full(lengths[r], i + 1) for i, r in enumerate(rows)])[None]
    return toks, pos, seg
