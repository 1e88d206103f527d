"""Block-FP8 weights (how DeepSeek ships V3): dequantisation equals a block-by-block numpy loop and
transformers' own, and an FP8 checkpoint loads with the logits of its dequantised twin."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxcook.models import load
from jaxcook.models.fp8 import dequantize
from jaxcook.models.safetensors_source import WeightsError
from tests.models.families import loads_like_its_twin, save_random_hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BLOCK = (16, 24)  # rows x cols: partial edge blocks on most of the tiny model's dims


def reference(weight, scale_inv, block):
    """The formula block by block: w[i:i+br, j:j+bc] * scale_inv[i/br, j/bc], edges partial."""
    br, bc = block
    out = weight.astype(np.float32)
    for bi in range(scale_inv.shape[-2]):
        for bj in range(scale_inv.shape[-1]):
            rows, cols = slice(bi * br, (bi + 1) * br), slice(bj * bc, (bj + 1) * bc)
            out[..., rows, cols] *= scale_inv[..., bi, bj, None, None]
    return out


def quantise(w_RC, block):
    """(FP8 weight [R, C], float32 scale_inv [ceil(R/br), ceil(C/bc)]): amax / 448 per block."""
    br, bc = block
    R, C = w_RC.shape
    scale = np.empty((-(-R // br), -(-C // bc)), np.float32)
    for bi in range(scale.shape[0]):
        for bj in range(scale.shape[1]):
            tile = w_RC[bi * br : (bi + 1) * br, bj * bc : (bj + 1) * bc]
            scale[bi, bj] = max(np.abs(tile).max(), 1e-12) / 448
    scale_RC = np.repeat(np.repeat(scale, br, 0), bc, 1)[:R, :C]
    return (w_RC / scale_RC).astype(ml_dtypes.float8_e4m3fn), scale


def random_fp8(rng, shape, block):
    weight = rng.normal(size=shape).astype(ml_dtypes.float8_e4m3fn)
    scales = (-(-shape[-2] // block[0]), -(-shape[-1] // block[1]))
    return weight, rng.uniform(0.01, 2.0, (*shape[:-2], *scales)).astype(np.float32)


def test_dequantize_equals_a_blockwise_loop():
    weight, scale_inv = random_fp8(np.random.default_rng(0), (2, 40, 50), BLOCK)  # 3 x 3 blocks each
    got = dequantize(weight, scale_inv, BLOCK)
    assert got.shape == (2, 40, 50) and got.dtype == np.float32
    np.testing.assert_array_equal(got, reference(weight, scale_inv, BLOCK))


def test_dequantize_equals_transformers():
    from transformers.integrations.finegrained_fp8 import _dequantize_fp8_weight

    weight, scale_inv = random_fp8(np.random.default_rng(1), (40, 50), BLOCK)
    w = torch.from_numpy(weight.view(np.uint8)).view(torch.float8_e4m3fn)
    want = _dequantize_fp8_weight(w, torch.from_numpy(scale_inv), list(BLOCK), torch.float32).numpy()
    np.testing.assert_array_equal(dequantize(weight, scale_inv, BLOCK), want)


def test_scales_of_the_wrong_grid_are_an_error():
    weight, scale_inv = random_fp8(np.random.default_rng(2), (40, 50), BLOCK)
    with pytest.raises(ValueError, match=r"needs scales \(3, 3\), got \(3, 2\)"):
        dequantize(weight, scale_inv[:, :2], BLOCK)


def _quantised_linear(name: str, w) -> bool:
    """DeepSeek's FP8 layout: every linear but the embeddings, lm_head and the router."""
    return w.ndim == 2 and not name.endswith(("embed_tokens.weight", "lm_head.weight", "mlp.gate.weight"))


def test_fp8_checkpoint_loads_like_its_dequantised_twin(tmp_path):
    from safetensors.torch import save_file

    hf = save_random_hf(tmp_path / "plain", "deepseek_v3")
    tensors = load_file(str(tmp_path / "plain" / "model.safetensors"))
    quantised, twin = {}, {}
    for name, w in tensors.items():
        if not _quantised_linear(name, w):
            quantised[name] = twin[name] = torch.from_numpy(w)
            continue
        q, scale_inv = quantise(w, BLOCK)
        quantised[name] = torch.from_numpy(q.view(np.uint8)).view(torch.float8_e4m3fn)
        quantised[name.removesuffix("weight") + "weight_scale_inv"] = torch.from_numpy(scale_inv)
        twin[name] = torch.from_numpy(reference(q, scale_inv, BLOCK))
    assert any(t.dtype == torch.float8_e4m3fn for t in quantised.values())
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    save_file(twin, str(tmp_path / "plain" / "model.safetensors"), metadata={"format": "pt"})
    twin_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain", dtype=torch.float32)
    (tmp_path / "q").mkdir()
    save_file(quantised, str(tmp_path / "q" / "model.safetensors"), metadata={"format": "pt"})
    config["quantization_config"] = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": list(BLOCK),
    }
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))

    assert loads_like_its_twin(tmp_path / "q", twin_model, hf).fp8_block_size == BLOCK

    config["quantization_config"]["weight_block_size"] = [16, 16]  # scales of another grid
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"\.weight: FP8 weight \(\d+, \d+\) with blocks \(16, 16\) needs"):
        load(str(tmp_path / "q"), tokenizer=False)


def test_power_of_two_scales_as_e8m0_equal_float32():
    """DeepSeek V3.1's `scale_fmt: ue8m0`: scales 2^k, stored as float32, E8M0 or raw E8M0 bytes."""
    weight, _ = random_fp8(np.random.default_rng(3), (40, 50), BLOCK)
    exponent = np.random.default_rng(4).integers(-8, 3, (3, 3))
    want = reference(weight, np.ldexp(np.float32(1), exponent), BLOCK)
    e8m0 = np.ldexp(np.float32(1), exponent).astype(ml_dtypes.float8_e8m0fnu)
    np.testing.assert_array_equal(dequantize(weight, e8m0, BLOCK), want)
    np.testing.assert_array_equal(dequantize(weight, (exponent + 127).astype(np.uint8), BLOCK), want)
