"""The PyTorch peers the benchmarks measure against: the same SmolLM2-135M-Instruct weights.

transformers flags a model loaded from GGUF as quantized (and its Trainer refuses to train it),
so the peers load a plain HF safetensors folder that jaxcook exports from the embedded GGUF once
into the cache (f32, the same dequantised weights jaxcook uses).
"""

from __future__ import annotations

from pathlib import Path

from jaxcook.assets import cache_dir

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def smollm2_hf_folder() -> Path:
    folder = cache_dir() / "models" / "smollm2-135m-instruct-hf"
    if not (folder / "model.safetensors").exists():
        from jaxcook.models import load
        from jaxcook.models.export import save_hf

        lm = load("smollm2-135m-instruct")
        save_hf(lm.model, folder, tokenizer=lm.tokenizer)
    return folder


def torch_smollm2(lora_rank: int | None = None):
    """transformers LlamaForCausalLM (f32), with PEFT LoRA on every projection if `lora_rank`."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_hf_folder(), dtype=torch.float32)
    if lora_rank:
        import peft

        config = peft.LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=TARGET_MODULES)
        model = peft.get_peft_model(model, config)
    return model
