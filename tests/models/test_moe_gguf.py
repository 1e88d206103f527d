"""A Qwen3-MoE GGUF in llama.cpp's names (`qwen3moe`, stacked `ffn_*_exps` experts) loads with
the logits transformers gives the same weights."""

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxcook.models import load
from tests.models.families import hf_logits, padded_batch, save_random_hf

gguf = pytest.importorskip("gguf")

BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
}


def write_gguf(folder, path, cfg):
    """The HF checkpoint in `folder` as an f32 GGUF, named and laid out as llama.cpp does."""
    tensors = load_file(str(folder / "model.safetensors"))
    w = gguf.GGUFWriter(str(path), "qwen3moe")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_context_length(cfg.max_position_embeddings)
    w.add_expert_count(cfg.num_experts)
    w.add_expert_used_count(cfg.num_experts_per_tok)
    w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    w.add_tensor("token_embd.weight", tensors["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", tensors["model.norm.weight"])
    w.add_tensor("output.weight", tensors["lm_head.weight"])
    E = cfg.num_experts
    for i in range(cfg.num_hidden_layers):
        prefix = f"model.layers.{i}."
        for hf, ours in BLOCK.items():
            w.add_tensor(f"blk.{i}.{ours}", tensors[prefix + hf])
        for proj, name in (
            ("gate_proj", "ffn_gate_exps"),
            ("up_proj", "ffn_up_exps"),
            ("down_proj", "ffn_down_exps"),
        ):
            stacked = np.stack([tensors[f"{prefix}mlp.experts.{e}.{proj}.weight"] for e in range(E)])
            w.add_tensor(f"blk.{i}.{name}.weight", stacked)  # [E, out, in]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_qwen3_moe_gguf_matches_transformers(tmp_path):
    hf = save_random_hf(tmp_path / "hf", "qwen3_moe")
    write_gguf(tmp_path / "hf", tmp_path / "model.gguf", hf.config)
    lm = load(str(tmp_path / "model.gguf"), tokenizer=False)
    assert lm.config.model_type == "qwen3_moe" and lm.config.moe.num_experts == 8
    tokens, mask = padded_batch()
    positions = np.broadcast_to(np.arange(40), tokens.shape)
    ours = np.asarray(lm.model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))
    valid = mask.astype(bool)
    assert np.abs(ours[valid] - hf_logits(hf, tokens, mask)[valid]).max() <= 1e-4
