"""MXFP4 expert weights (how OpenAI ships GPT-OSS): dequantisation equals transformers', and a
checkpoint with quantised experts loads with the logits of its dequantised twin."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxcook.models import load
from jaxcook.models.mxfp4 import dequantize
from tests.models.families import hf_logits, padded_batch, save_random_hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def random_mxfp4(rng, lead, rows, cols):
    """blocks [*lead, rows, cols/32, 16] and scales [*lead, rows, cols/32] of small weights."""
    blocks = rng.integers(0, 256, (*lead, rows, cols // 32, 16), dtype=np.uint8)
    scales = rng.integers(120, 125, (*lead, rows, cols // 32), dtype=np.uint8)  # 2^-7 .. 2^-3
    return blocks, scales


def test_dequantize_equals_transformers():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    blocks, scales = random_mxfp4(np.random.default_rng(0), (3,), 8, 64)
    want = convert_moe_packed_tensors(torch.tensor(blocks), torch.tensor(scales), dtype=torch.float32).numpy()
    got = dequantize(blocks, scales)
    assert got.shape == (3, 64, 8)
    np.testing.assert_array_equal(got, want)


def test_quantised_checkpoint_loads_like_its_dequantised_twin(tmp_path):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    hf = save_random_hf(tmp_path / "plain", "gpt_oss")
    tensors = load_file(str(tmp_path / "plain" / "model.safetensors"))
    rng = np.random.default_rng(1)
    quantised = dict(tensors)
    for name in [n for n in tensors if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        E, In, Out = tensors[name].shape  # [E, in, out]
        blocks, scales = random_mxfp4(rng, (E,), Out, In)
        del quantised[name]
        quantised[f"{name}_blocks"], quantised[f"{name}_scales"] = blocks, scales
        tensors[name] = convert_moe_packed_tensors(
            torch.tensor(blocks), torch.tensor(scales), dtype=torch.float32
        ).numpy()
    # the dequantised twin, as transformers would run it
    save_file(tensors, str(tmp_path / "plain" / "model.safetensors"), metadata={"format": "pt"})
    twin = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain", dtype=torch.float32).eval()
    (tmp_path / "q").mkdir()
    save_file(quantised, str(tmp_path / "q" / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": []}
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))

    tokens, mask = padded_batch()
    positions = np.broadcast_to(np.arange(40), tokens.shape)
    model = load(str(tmp_path / "q"), tokenizer=False).model
    ours = np.asarray(model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))
    valid = mask.astype(bool)
    ref = hf_logits(twin, tokens, mask)
    assert np.abs(ours[valid] - ref[valid]).max() <= 1e-4
    assert np.abs(ref[valid] - hf_logits(hf, tokens, mask)[valid]).max() > 1e-3  # new weights matter
