"""LoRA invariances and export: B=0 is the base, merged equals unmerged, HF and PEFT round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcook import lora as lora_lib
from jaxcook.lora import LoraConfig
from jaxcook.models import load
from jaxcook.models.export import save_hf, save_peft

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from tests.models.test_hf_parity import padded_batch, save_random_hf  # noqa: E402


def randomize_adapters(model, seed=1):
    """Give every adapter a nonzero B so the adapters change the output."""
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 1000))
    for _, node in nnx.iter_graph(model):
        if hasattr(node, "lora_b") and node.lora_b is not None:
            node.lora_b[...] = 0.05 * jax.random.normal(next(keys), node.lora_b[...].shape)


def logits(model, tokens, mask):
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    return np.asarray(model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))


@pytest.fixture(params=["llama", "llama_tied"])
def hf_folder(request, tmp_path):
    save_random_hf(tmp_path / "base", request.param)
    return tmp_path / "base"


def test_zero_b_equals_base(hf_folder):
    tokens, mask = padded_batch()
    base = load(str(hf_folder), tokenizer=False).model
    adapted = load(str(hf_folder), lora=LoraConfig(rank=4), tokenizer=False).model
    np.testing.assert_array_equal(logits(base, tokens, mask), logits(adapted, tokens, mask))


def test_split_trains_only_adapters(hf_folder):
    cfg = LoraConfig(rank=4, train_unembed=False)
    model = load(str(hf_folder), lora=cfg, tokenizer=False).model
    _, trainable, frozen = lora_lib.split(model, cfg)
    assert all(isinstance(v, nnx.LoRAParam) for _, v in nnx.to_flat_state(trainable))
    # rank 4 on q,k,v,o (64->64, 64->32, 64->32, 64->64) and gate, up, down (64->96 x2, 96->64), 2 layers
    per_layer = 4 * ((64 + 64) + (64 + 32) * 2 + (64 + 64)) + 4 * ((64 + 96) * 2 + (96 + 64))
    assert lora_lib.count_trainable(model, cfg) == 2 * per_layer
    full = load(str(hf_folder), tokenizer=False).model
    assert lora_lib.count_trainable(full, None) == lora_lib.count_params(nnx.state(full, nnx.Param))
    assert lora_lib.count_params(frozen) == lora_lib.count_params(nnx.state(full, nnx.Param))


def test_merged_export_equals_unmerged_and_loads_in_transformers(hf_folder, tmp_path):
    tokens, mask = padded_batch()
    model = load(str(hf_folder), lora=LoraConfig(rank=4, alpha=8), tokenizer=False).model
    randomize_adapters(model)
    ours = logits(model, tokens, mask)
    assert np.abs(ours - logits(load(str(hf_folder), tokenizer=False).model, tokens, mask)).max() > 1e-3
    out = save_hf(model, tmp_path / "merged")
    merged = load(str(out), tokenizer=False).model
    valid = mask.astype(bool)
    assert np.abs(logits(merged, tokens, mask)[valid] - ours[valid]).max() <= 1e-4
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.abs(ref[valid] - ours[valid]).max() <= 1e-4


def test_peft_adapter_loads_with_same_logits(hf_folder, tmp_path):
    tokens, mask = padded_batch()
    model = load(str(hf_folder), lora=LoraConfig(rank=4, alpha=8), tokenizer=False).model
    randomize_adapters(model)
    ours = logits(model, tokens, mask)
    adapter = save_peft(model, tmp_path / "adapter", base_model_name_or_path=str(hf_folder))
    base = transformers.AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32)
    hf = peft.PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(ref[valid] - ours[valid]).max() <= 1e-4


def test_merge_adapters_in_place_keeps_forward(hf_folder):
    tokens, mask = padded_batch()
    model = load(str(hf_folder), lora=LoraConfig(rank=4, train_unembed=False), tokenizer=False).model
    randomize_adapters(model)
    before = logits(model, tokens, mask)
    lora_lib.merge_adapters(model)
    np.testing.assert_allclose(logits(model, tokens, mask), before, atol=1e-5)


def test_peft_adapter_of_moe_experts_loads_with_same_logits(tmp_path):
    # Adapters on attention and on every expert's gate / up / down: PEFT puts the experts' on
    # transformers' fused expert parameters (target_parameters), gate and up as one of rank 2r.
    from tests.models.families import padded_batch as moe_batch
    from tests.models.families import save_random_hf as save_family

    save_family(tmp_path / "base", "qwen3_moe")
    tokens, mask = moe_batch()
    model = load(str(tmp_path / "base"), lora=LoraConfig(rank=4, alpha=8), tokenizer=False).model
    randomize_adapters(model)
    ours = logits(model, tokens, mask)
    valid = mask.astype(bool)
    base_logits = logits(load(str(tmp_path / "base"), tokenizer=False).model, tokens, mask)
    assert np.abs(ours - base_logits)[valid].max() > 1e-3  # the adapters matter
    adapter = save_peft(model, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    hf = peft.PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.abs(ref[valid] - ours[valid]).max() <= 1e-4


@pytest.mark.parametrize("case", ["gpt_oss", "deepseek_v3"])
def test_peft_export_of_other_moe_expert_adapters_is_a_clear_error(case, tmp_path):
    from tests.models.families import save_random_hf as save_family

    save_family(tmp_path / "base", case)
    model = load(str(tmp_path / "base"), lora=LoraConfig(rank=4), tokenizer=False).model
    with pytest.raises(ValueError, match=rf"save_peft \({case}\):.*save_hf.*lora.train_mlp=false"):
        save_peft(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()  # nothing half-written
    attn_only = load(str(tmp_path / "base"), lora=LoraConfig(rank=4, train_mlp=False), tokenizer=False).model
    assert (save_peft(attn_only, tmp_path / "adapter") / "adapter_model.safetensors").exists()
