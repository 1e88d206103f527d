"""Packed INT4 weights (how Kimi K2 Thinking ships its experts): unpacking equals compressed-tensors'
own, a packed checkpoint loads with the logits of its dequantised twin, and a bad config or tensor
is a one-line error naming it."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxcook.models import load
from jaxcook.models.config import ConfigError
from jaxcook.models.int4 import dequantize, read_compressed_int4
from jaxcook.models.safetensors_source import WeightsError
from tests.models.families import loads_like_its_twin, save_random_hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ct = pytest.importorskip("compressed_tensors")

GROUP = 16


def kimi_quant(group=GROUP):
    """Kimi K2 Thinking's quantization_config, with a tiny model's group size."""
    weights = {
        "num_bits": 4,
        "type": "int",
        "symmetric": True,
        "strategy": "group",
        "group_size": group,
        "dynamic": False,
        "actorder": None,
        "block_structure": None,
        "observer": "minmax",
        "observer_kwargs": {},
    }
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": None,
                "output_activations": None,
            }
        },
        "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*"],
        "kv_cache_scheme": None,
    }


def compressed_tensors_pack(w_RC: np.ndarray, group: int):
    """(weight_packed, weight_scale, weight_shape) of w by compressed-tensors' own packer, and the
    weight they hold by its own unpacker: q * scale, exact in float32. (Its `decompress` returns the
    same in the scales' dtype, bf16 here, which the test checks too.)"""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    R, C = w_RC.shape
    cols = -(-C // group) * group
    padded = np.zeros((R, cols), np.float32)
    padded[:, :C] = w_RC
    scale = (np.abs(padded.reshape(R, -1, group)).max(-1) / 7 + 1e-6).astype(np.float32)
    scale = torch.from_numpy(scale).to(torch.bfloat16)  # Kimi stores bf16 scales
    rep = scale.float().repeat_interleave(group, dim=1)[:, :C]
    q = torch.clamp(torch.round(torch.from_numpy(w_RC) / rep), -8, 7).to(torch.int8)
    packed = pack_to_int32(q, 4)
    shape = torch.tensor([R, C], dtype=torch.int64)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    state = {"weight_packed": packed, "weight_scale": scale, "weight_shape": shape}
    decompressed = PackedQuantizationCompressor.decompress(state, scheme)["weight"]
    twin = unpack_from_int32(packed, 4, torch.Size([R, C])).float() * rep
    assert decompressed.dtype == torch.bfloat16
    torch.testing.assert_close(decompressed.float(), twin, rtol=2**-8, atol=0)
    return packed, scale, shape, twin


@pytest.mark.parametrize(("columns", "group"), [(48, GROUP), (44, 4)])  # 44: a partial last word
def test_dequantize_equals_compressed_tensors(columns, group):
    w = np.random.default_rng(0).normal(size=(6, columns)).astype(np.float32)
    packed, scale, shape, twin = compressed_tensors_pack(w, group)
    got = dequantize(packed.numpy(), scale.float().numpy(), tuple(shape.tolist()), group)
    np.testing.assert_array_equal(got, twin.numpy())
    assert np.abs(got - w).max() < np.abs(w).max() / 7  # the rounding is at most half a step


def _expert(name: str) -> bool:
    return ".mlp.experts." in name and name.endswith("_proj.weight")


def test_int4_checkpoint_loads_like_its_dequantised_twin(tmp_path):
    from safetensors.torch import save_file

    hf = save_random_hf(tmp_path / "plain", "deepseek_v3")
    tensors = load_file(str(tmp_path / "plain" / "model.safetensors"))
    packed, twin = {}, {}
    for name, w in tensors.items():
        if not _expert(name):
            packed[name] = twin[name] = torch.from_numpy(w)
            continue
        p, scale, shape, deq = compressed_tensors_pack(w, GROUP)
        base = name.removesuffix(".weight")
        packed |= {base + ".weight_packed": p, base + ".weight_scale": scale, base + ".weight_shape": shape}
        twin[name] = deq
    assert any(n.endswith(".weight_packed") for n in packed)
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    save_file(twin, str(tmp_path / "plain" / "model.safetensors"), metadata={"format": "pt"})
    twin_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain", dtype=torch.float32)
    (tmp_path / "q").mkdir()
    save_file(packed, str(tmp_path / "q" / "model.safetensors"), metadata={"format": "pt"})
    config["quantization_config"] = kimi_quant()
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))

    assert loads_like_its_twin(tmp_path / "q", twin_model, hf).int4_group_size == GROUP

    config["quantization_config"] = kimi_quant(group=8)  # scales of another grid
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"\.weight: INT4 weight \(\d+, \d+\) in groups of 8 needs scales"):
        load(str(tmp_path / "q"), tokenizer=False)


def _weights(quant):
    return quant["config_groups"]["group_0"]["weights"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda q: _weights(q).update(num_bits=8), r"weights\.num_bits 8 .*only 4"),
        (lambda q: _weights(q).update(symmetric=False), r"weights\.symmetric False"),
        (lambda q: q["config_groups"]["group_0"].update(input_activations={"num_bits": 8}), r"input_act"),
        (lambda q: q.update(format="float-quantized"), r"format 'float-quantized' is not supported"),
        (lambda q: q.update(sparsity_config={"format": "sparse-24"}), r"sparsity_config is not supported"),
        (lambda q: q.update(colour="blue"), r"unsupported field 'colour'"),
    ],
)
def test_unsupported_quantization_is_a_one_line_error(edit, message):
    quant = kimi_quant()
    edit(quant)
    with pytest.raises(ConfigError, match=r"^cfg\.json: quantization_config.*" + message):
        read_compressed_int4(quant, "cfg.json")
    assert read_compressed_int4(kimi_quant(), "cfg.json") == GROUP
