"""Mistral, Gemma 3, GPT-OSS and DeepSeek V3 GGUFs, written as llama.cpp's `convert_hf_to_gguf.py`
names and lays them out, load with the logits (and config) of the same safetensors checkpoint.

`convert` below redoes the converter's changes with the `gguf` package's writer and its HF ->
GGUF name map: the q/k row permutation of `llama` (which Mistral converts to), Gemma's norm + 1,
GPT-OSS's split `gate_up_proj` (and its MXFP4 experts repacked into ggml blocks), DeepSeek's
stacked experts and `kv_b_proj` split into `attn_k_b` / `attn_v_b` (or kept, as older files do).
Where llama.cpp fixes a value the file cannot carry, the tiny config is set to it (Gemma 3: every
sixth layer global, query scale head_dim^-1/2; DeepSeek: YaRN mscale = mscale_all_dim).
"""

import json
import math
from dataclasses import asdict

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxcook.models import load
from tests.models.families import padded_batch, save_random_hf

gguf = pytest.importorskip("gguf")
from gguf.constants import MODEL_ARCH  # noqa: E402

ARCH = {"llama": MODEL_ARCH.LLAMA, "gemma3": MODEL_ARCH.GEMMA3, "gpt-oss": MODEL_ARCH.GPT_OSS}
ARCH["deepseek2"] = MODEL_ARCH.DEEPSEEK2


def permute(w, heads):
    """llama.cpp's q/k row order: per head, rows (halves) -> (pairs interleaved)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def ggml_mxfp4(blocks, scales):
    """OpenAI MXFP4 (blocks [..., G, 16], codes 2k / 2k+1 in the low / high nibble of byte k,
    scales [..., G]) -> ggml blocks [..., G * 17]: the scale byte, then byte j holding codes j
    (low nibble) and j + 16 (high)."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    qs = (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)
    raw = np.concatenate([scales[..., None].astype(np.uint8), qs], axis=-1)
    return raw.reshape(*raw.shape[:-2], -1)


def write_metadata(w, hf, arch):
    """`TextModel.set_gguf_parameters` and each family's additions."""
    rope = hf["rope_parameters"].get("full_attention", hf["rope_parameters"])
    w.add_block_count(hf["num_hidden_layers"])
    w.add_context_length(hf["max_position_embeddings"])
    w.add_embedding_length(hf["hidden_size"])
    w.add_feed_forward_length(hf["intermediate_size"])
    w.add_head_count(hf["num_attention_heads"])
    w.add_head_count_kv(1 if arch == "deepseek2" else hf["num_key_value_heads"])
    w.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    w.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    if rope["rope_type"] == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        w.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
        w.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
    for key in ("bos", "eos", "pad"):
        if hf.get(f"{key}_token_id") is not None:
            getattr(w, f"add_{key}_token_id")(hf[f"{key}_token_id"])
    if arch in ("llama", "gemma3", "gpt-oss"):
        w.add_key_length(hf["head_dim"])
        w.add_value_length(hf["head_dim"])
    if arch == "llama":
        w.add_vocab_size(hf["vocab_size"])
        w.add_rope_dimension_count(hf["head_dim"])
    if arch in ("gemma3", "gpt-oss"):
        w.add_sliding_window(hf["sliding_window"])
    if arch == "gpt-oss":
        w.add_expert_count(hf["num_local_experts"])
        w.add_expert_used_count(hf["num_experts_per_tok"])
        w.add_expert_feed_forward_length(hf["intermediate_size"])
    if arch == "deepseek2":
        r, rope_dim = hf["kv_lora_rank"], hf["qk_rope_head_dim"]
        w.add_expert_used_count(hf["num_experts_per_tok"])
        w.add_expert_group_count(hf["n_group"])
        w.add_expert_group_used_count(hf["topk_group"])
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)  # config's scoring_func
        w.add_leading_dense_block_count(hf["first_k_dense_replace"])
        w.add_vocab_size(hf["vocab_size"])
        w.add_q_lora_rank(hf["q_lora_rank"])
        w.add_kv_lora_rank(r)
        w.add_key_length(r + rope_dim)
        w.add_value_length(r)
        w.add_key_length_mla(hf["qk_nope_head_dim"] + rope_dim)
        w.add_value_length_mla(hf["v_head_dim"])
        w.add_expert_feed_forward_length(hf["moe_intermediate_size"])
        w.add_expert_count(hf["n_routed_experts"])
        w.add_expert_shared_count(hf["n_shared_experts"])
        w.add_expert_weights_scale(hf["routed_scaling_factor"])
        w.add_expert_weights_norm(hf["norm_topk_prob"])
        w.add_rope_dimension_count(rope_dim)
        w.add_rope_scaling_yarn_log_mul(0.1 * rope["mscale_all_dim"])


def hf_to_gguf_tensors(tensors, hf, arch, *, split_kv_b=True):
    """(GGUF name, array, raw ggml type or None) of each tensor, as the converter emits them."""
    names = gguf.get_tensor_name_map(ARCH[arch], hf["num_hidden_layers"])
    out, tensors = [], dict(tensors)

    def emit(hf_name, w, raw=None):
        out.append((names.get_name(hf_name, try_suffixes=(".weight", ".bias")), w, raw))

    for i in range(hf["num_hidden_layers"]):
        prefix = f"model.layers.{i}.mlp.experts."
        if f"{prefix}0.gate_proj.weight" in tensors:  # stack per-expert tensors [E, out, in]
            E = hf.get("n_routed_experts") or hf["num_local_experts"]
            for proj in ("down_proj", "gate_proj", "up_proj"):
                parts = [tensors.pop(f"{prefix}{e}.{proj}.weight") for e in range(E)]
                emit(f"{prefix}{proj}.weight", np.stack(parts))
    for name, w in tensors.items():
        i = name.split(".")[2] if name.startswith("model.layers.") else None
        if arch == "llama" and name.endswith("q_proj.weight"):
            w = permute(w, hf["num_attention_heads"])
        if arch == "llama" and name.endswith("k_proj.weight"):
            w = permute(w, hf["num_key_value_heads"])
        if arch == "gemma3" and name.endswith("norm.weight"):
            w = w + 1
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        if name.endswith("self_attn.sinks"):
            name += ".weight"
        if name.endswith("kv_b_proj.weight") and split_kv_b:
            H, nope, v = hf["num_attention_heads"], hf["qk_nope_head_dim"], hf["v_head_dim"]
            k_b, v_b = np.split(w.reshape(H, nope + v, -1), [nope], axis=1)
            emit(name.replace("kv_b_proj", "k_b_proj"), np.ascontiguousarray(k_b.swapaxes(1, 2)))
            emit(name.replace("kv_b_proj", "v_b_proj"), np.ascontiguousarray(v_b))
            continue
        experts = f"model.layers.{i}.mlp.experts."
        if name.endswith("gate_up_proj_blocks"):  # rows interleave gate, up
            blocks, scales = w, tensors[name.replace("_blocks", "_scales")]
            for proj, rows in (("gate_proj", slice(0, None, 2)), ("up_proj", slice(1, None, 2))):
                raw = ggml_mxfp4(blocks[:, rows], scales[:, rows])
                emit(f"{experts}{proj}.weight", raw, gguf.GGMLQuantizationType.MXFP4)
            continue
        if name.endswith("down_proj_blocks"):
            raw = ggml_mxfp4(w, tensors[name.replace("_blocks", "_scales")])
            emit(f"{experts}down_proj.weight", raw, gguf.GGMLQuantizationType.MXFP4)
            continue
        if name.endswith("_scales"):
            continue
        if name.endswith("gate_up_proj_bias"):
            emit(f"{experts}gate_proj.bias", w[..., ::2].copy())
            emit(f"{experts}up_proj.bias", w[..., 1::2].copy())
            continue
        if name.endswith("gate_up_proj"):  # [E, D, 2F] -> [E, 2F, D], rows interleave gate, up
            w = w.swapaxes(1, 2)
            emit(f"{experts}gate_proj.weight", np.ascontiguousarray(w[:, ::2]))
            emit(f"{experts}up_proj.weight", np.ascontiguousarray(w[:, 1::2]))
            continue
        if name.endswith("down_proj_bias"):
            name = name.replace("down_proj_bias", "down_proj.bias")
        elif name.endswith("experts.down_proj"):
            name, w = name + ".weight", np.ascontiguousarray(w.swapaxes(1, 2))
        emit(name, w)
    return out


def convert(folder, path, arch, *, mtp=False, **kw):
    """The HF checkpoint in `folder` as an f32 GGUF of llama.cpp architecture `arch`. `mtp`: with
    one multi-token-prediction block after the others, as MTP-aware converters append one (a
    copy of the last layer plus a `nextn.*` tensor here; the loader must skip it)."""
    hf = json.loads((folder / "config.json").read_text())
    layers = hf["num_hidden_layers"]
    w = gguf.GGUFWriter(str(path), arch)
    write_metadata(w, {**hf, "num_hidden_layers": layers + mtp}, arch)
    tensors = hf_to_gguf_tensors(load_file(str(folder / "model.safetensors")), hf, arch, **kw)
    if mtp:
        w.add_nextn_predict_layers(1)
        last = f"blk.{layers - 1}."
        tensors += [(f"blk.{layers}." + n[len(last) :], v, r) for n, v, r in tensors if n.startswith(last)]
        tensors.append((f"blk.{layers}.nextn.eh_proj.weight", np.ones((64, 128), np.float32), None))
    for name, value, raw in tensors:
        assert name is not None
        w.add_tensor(name, value, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def mxfp4_experts(folder):
    """Replace the checkpoint's experts by random MXFP4 ones, as OpenAI ships GPT-OSS."""
    tensors = load_file(str(folder / "model.safetensors"))
    rng = np.random.default_rng(1)
    for name in [n for n in tensors if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        E, In, Out = tensors.pop(name).shape
        tensors[f"{name}_blocks"] = rng.integers(0, 256, (E, Out, In // 32, 16), dtype=np.uint8)
        tensors[f"{name}_scales"] = rng.integers(120, 125, (E, Out, In // 32), dtype=np.uint8)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": []}
    (folder / "config.json").write_text(json.dumps(config))


def close(a, b, path=""):
    """Equal configs, floats to float32 precision (GGUF stores f32)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6), (path, a, b)
    else:
        assert a == b, (path, a, b)


GEMMA3 = dict(
    num_hidden_layers=6,
    query_pre_attn_scalar=32,
    layer_types=["sliding_attention"] * 5 + ["full_attention"],
)
DEEPSEEK_ROPE = {
    "rope_type": "yarn",
    "factor": 8.0,
    "mscale": 0.7,
    "mscale_all_dim": 0.7,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "original_max_position_embeddings": 16,
    "rope_theta": 10000.0,
}
CASES = {  # family of the tiny HF model, llama.cpp architecture, config overrides, converter options
    "mistral": ("mistral_full", "llama", {}, {}),
    "gemma3": ("gemma3", "gemma3", GEMMA3, {}),
    "gpt_oss": ("gpt_oss", "gpt-oss", {}, {}),
    "gpt_oss_mxfp4": ("gpt_oss", "gpt-oss", {}, {}),
    "deepseek_v3": ("deepseek_v3", "deepseek2", {"rope_parameters": DEEPSEEK_ROPE}, {"mtp": True}),
    "deepseek_v3_kv_b": (
        "deepseek_v3",
        "deepseek2",
        {"rope_parameters": DEEPSEEK_ROPE},
        {"split_kv_b": False},
    ),
}
SLOW = {"gpt_oss", "deepseek_v3_kv_b"}  # the MXFP4 and split-kv_b files cover the same code and more


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_gguf_loads_like_the_safetensors_checkpoint(tmp_path, case):
    family, arch, overrides, kw = CASES[case]
    save_random_hf(tmp_path / "hf", family, **overrides)
    if case.endswith("_mxfp4"):
        mxfp4_experts(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "model.gguf", arch, **kw)
    ours = load(str(tmp_path / "model.gguf"), tokenizer=False)
    ref = load(str(tmp_path / "hf"), tokenizer=False)
    got, want = asdict(ours.config), asdict(ref.config)
    for key in ("extra", "fp8_block_size"):
        got.pop(key), want.pop(key)
    if case == "mistral":  # llama.cpp converts Mistral to `llama`: the same forward pass
        assert (got.pop("model_type"), want.pop("model_type")) == ("llama", "mistral")
    close(got, want)
    tokens, mask = padded_batch()
    positions = jnp.asarray(np.broadcast_to(np.arange(40), tokens.shape))
    logits = [
        np.asarray(m.model.logits(jnp.asarray(tokens), positions, jnp.asarray(mask))) for m in (ours, ref)
    ]
    valid = mask.astype(bool)
    assert np.abs(logits[0][valid] - logits[1][valid]).max() <= 1e-5


def tiny_gguf(path, arch, keys=(), tensors=("token_embd.weight",)):
    """A GGUF of `arch` with the given (`{arch}.`-relative key, value) pairs and 4 x 4 tensors."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in keys:
        if isinstance(value, float):
            w.add_float32(f"{arch}.{key}", value)
        else:
            w.add_uint32(f"{arch}.{key}", value)
    for name in tensors:
        w.add_tensor(name, np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    "arch, keys, tensors, message",
    [
        (
            "gemma3",
            [("final_logit_softcapping", 30.0)],
            (),
            "unsupported metadata key 'gemma3.final_logit_softcapping'",
        ),
        ("deepseek2", [("block_count", 1)], (), "missing metadata field 'deepseek2.expert_gating_func'"),
        (
            "deepseek2",
            [("block_count", 1), ("expert_gating_func", 1)],
            (),
            r"unsupported deepseek2.expert_gating_func=1 \(only sigmoid",
        ),
        (
            "gpt-oss",
            [],
            ("blk.0.ffn_gate_up_exps.weight",),
            "unexpected tensor 'blk.0.ffn_gate_up_exps.weight'",
        ),
        (
            "gpt-oss",
            [],
            ("blk.0.ffn_gate_exps.weight",),
            "blk.0.ffn_gate_exps.weight has no blk.0.ffn_up_exps.weight",
        ),
        ("mamba", [], (), "unsupported general.architecture 'mamba'"),
    ],
)
def test_bad_gguf_is_one_clear_error_naming_the_key_and_file(tmp_path, arch, keys, tensors, message):
    from jaxcook.models import WeightsError
    from jaxcook.models.gguf_source import GGUFSource

    path = tiny_gguf(tmp_path / "bad.gguf", arch, keys, ("token_embd.weight", *tensors))
    with pytest.raises(WeightsError, match=f"^{path}: {message}"):
        GGUFSource(path).hf_config()
