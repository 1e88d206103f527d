"""Logits parity with HF transformers (PyTorch, CPU) on tiny random configs of every family."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxcook.models import load  # noqa: E402

BASE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
LLAMA31_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
    "rope_theta": 500000.0,
}
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "llama_tied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True)),
    "llama31_rope": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters=LLAMA31_ROPE)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32, tie_word_embeddings=True)),
}


def save_random_hf(tmp_path, case, seed=0):
    config_cls, model_cls, extra = CASES[case]
    config = getattr(transformers, config_cls)(**BASE, **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():  # random (not zero) biases and norm scales, so they are tested too
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    return model


def padded_batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = [40, 23, 7]
    tokens = np.zeros((3, 40), np.int64)
    mask = np.zeros((3, 40), np.int64)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(0, BASE["vocab_size"], n)
        mask[i, :n] = 1
    return tokens, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
    hf_model = save_random_hf(tmp_path, case)
    tokens, mask = padded_batch()
    with torch.no_grad():
        ref = hf_model(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    lm = load(str(tmp_path), tokenizer=False)
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    ours = np.asarray(lm.model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))
    valid = mask.astype(bool)
    assert np.abs(ours[valid] - ref[valid]).max() <= 1e-4


def test_packed_equals_padded(tmp_path):
    save_random_hf(tmp_path, "qwen3")
    model = load(str(tmp_path), tokenizer=False).model
    tokens, mask = padded_batch(1)
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    padded = np.asarray(model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))
    lengths = mask.sum(1)
    # pack rows 1 and 2 into one row: segments 1 and 2, positions restarting at 0
    packed_tokens = np.concatenate([tokens[1, : lengths[1]], tokens[2, : lengths[2]]])[None]
    packed_pos = np.concatenate([np.arange(lengths[1]), np.arange(lengths[2])])[None]
    packed_seg = np.concatenate([np.full(lengths[1], 1), np.full(lengths[2], 2)])[None]
    packed = np.asarray(
        model.logits(jnp.asarray(packed_tokens), jnp.asarray(packed_pos), jnp.asarray(packed_seg))
    )
    np.testing.assert_allclose(packed[0, : lengths[1]], padded[1, : lengths[1]], atol=1e-5)
    np.testing.assert_allclose(packed[0, lengths[1] :], padded[2, : lengths[2]], atol=1e-5)
