"""Export: a merged Hugging Face safetensors folder, and LoRA adapters in PEFT format.

`save_hf` writes base weights with every adapter folded in (`W + (A @ B * scale)^T` in HF
orientation); a tied-embedding model with an unembed adapter is written untied, since the
adapted head no longer equals the embedding. `save_peft` writes `adapter_config.json` and
`adapter_model.safetensors` that `peft.PeftModel.from_pretrained` loads onto the HF model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import numpy as np
from safetensors.numpy import save_file

from jaxcook.lora import iter_lora_linears
from jaxcook.models.decoder import Decoder
from jaxcook.models.expert_weights import to_hf_layout
from jaxcook.models.params import export_tensors, hf_names


def _adapters(model: Decoder):
    """Yield (hf_module_names, A [.., in, r], B [.., r, out], scale) for every adapter."""
    for path, linear in iter_lora_linears(model):
        path = tuple(str(p) for p in path)
        names, _ = hf_names((*path, "kernel"), model.config)
        a, b = np.asarray(jax.device_get(linear.lora_a[...])), np.asarray(jax.device_get(linear.lora_b[...]))
        yield [name[: -len(".weight")] for name in names], a, b, linear.lora_scale
    head = model.lm_head_lora
    if head is not None:
        a, b = np.asarray(jax.device_get(head.lora_a[...])), np.asarray(jax.device_get(head.lora_b[...]))
        yield ["lm_head"], a, b, head.lora_scale


def merged_tensors(model: Decoder) -> tuple[dict[str, np.ndarray], bool]:
    """HF tensors with adapters folded in, and whether the head had to be untied."""
    tensors = {k: v.astype(np.float32) for k, v in export_tensors(model).items()}
    untied = False
    for modules, a, b, scale in _adapters(model):
        a_stack = a if a.ndim >= 3 else a[None]  # [L, in, r], or [L, E, in, r] for experts
        b_stack = b if b.ndim >= 3 else b[None]
        for module, a_l, b_l in zip(modules, a_stack, b_stack, strict=True):
            delta = (a_l @ b_l * scale).T  # [out, in] HF orientation ([out, in, E] for experts)
            name = f"{module}.weight"
            if name not in tensors:  # tied head: start from the shared embedding
                tensors[name] = tensors["model.embed_tokens.weight"].copy()
                untied = True
            tensors[name] = tensors[name] + delta
    return tensors, untied


def save_hf(model: Decoder, out_dir: str | Path, *, tokenizer=None, dtype=np.float32) -> Path:
    """Write `config.json`, `model.safetensors` (merged) and the tokenizer files to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, untied = merged_tensors(model)
    tensors = to_hf_layout(model.config, tensors)
    hf_config = model.config.to_hf()
    if untied:
        hf_config["tie_word_embeddings"] = False
    elif model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    hf_config["torch_dtype"] = np.dtype(dtype).name
    save_file(
        {k: np.ascontiguousarray(v.astype(dtype)) for k, v in tensors.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


_EXPERT_PROJ = re.compile(r"^(.*\.mlp\.experts)\.(gate_proj|up_proj|down_proj)$")
# The order PEFT wraps the experts' parameters in: the first is the inner `base_layer`.
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def _peft_expert_a(a_EIR: np.ndarray) -> np.ndarray:
    """[E, in, r] -> PEFT's `lora_A.weight` of a 3-D parameter, [E * r, in] (row e * r + k)."""
    E, In, r = a_EIR.shape
    return np.ascontiguousarray(a_EIR.transpose(0, 2, 1).reshape(E * r, In))


def _peft_expert_b(b_ERO: np.ndarray) -> np.ndarray:
    """[E, r, out] -> PEFT's `lora_B.weight` of a 3-D parameter, [out, r * E] (column k * E + e)."""
    E, r, Out = b_ERO.shape
    return np.ascontiguousarray(b_ERO.transpose(2, 1, 0).reshape(Out, r * E))


def _expert_tensors(prefix: str, projs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """One layer's expert adapters as PEFT's LoRA on transformers' fused expert parameters:
    `gate_up_proj` [E, 2F, D] (gate rows first) takes the gate and up adapters as one of rank 2r
    (A stacked, B block-diagonal), `down_proj` [E, D, F] the down adapter."""
    (a_g, b_g), (a_u, b_u), (a_d, b_d) = (projs[p] for p in ("gate_proj", "up_proj", "down_proj"))
    E, r, F = b_g.shape
    b_gu = np.zeros((E, 2 * r, 2 * F), b_g.dtype)
    b_gu[:, :r, :F], b_gu[:, r:, F:] = b_g, b_u
    inner, outer = f"base_model.model.{prefix}.base_layer", f"base_model.model.{prefix}"
    return {
        f"{inner}.lora_A.weight": _peft_expert_a(np.concatenate([a_g, a_u], axis=-1)),
        f"{inner}.lora_B.weight": _peft_expert_b(b_gu),
        f"{outer}.lora_A.weight": _peft_expert_a(a_d),
        f"{outer}.lora_B.weight": _peft_expert_b(b_d),
    }


def save_peft(model: Decoder, out_dir: str | Path, *, base_model_name_or_path: str = "") -> Path:
    """Write the adapters as a PEFT LoRA adapter folder. Qwen3-MoE experts' adapters target
    transformers' fused expert parameters (`target_parameters`, peft >= 0.17)."""
    lora = model.lora
    if lora is None:
        raise ValueError("model has no LoRA adapters to export (it was built with lora=None)")
    experts_adapted = model.config.moe is not None and lora.train_mlp
    if experts_adapted and model.config.model_type != "qwen3_moe":
        why = {
            "gpt_oss": "GPT-OSS experts' adapters have no PEFT layout here (fused, interleaved gate_up_proj)",
            # peft 0.21's transformers-5 conversion maps every gate_proj / up_proj / down_proj
            # target of the model onto the fused experts, so the dense layers' and shared experts'
            # adapters would be dropped (measured: logits off by 0.25 on the tiny model)
        }.get(model.config.model_type, "PEFT would put the dense MLPs' gate/up/down adapters on the experts")
        raise ValueError(
            f"save_peft ({model.config.model_type}): {why}; export merged weights with save_hf, or "
            "train with lora.train_mlp=false"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, targets, experts = {}, set(), {}
    for modules, a, b, _ in _adapters(model):
        a_stack = a if a.ndim in (3, 4) else a[None]
        b_stack = b if b.ndim in (3, 4) else b[None]
        for module, a_l, b_l in zip(modules, a_stack, b_stack, strict=True):
            if (m := _EXPERT_PROJ.match(module)) is not None:
                experts.setdefault(m.group(1), {})[m.group(2)] = (a_l, b_l)
                continue
            targets.add(module.split(".")[-1])
            prefix = f"base_model.model.{module}"
            tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a_l.T)  # [r, in]
            tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b_l.T)  # [out, r]
    for prefix, projs in experts.items():
        tensors.update(_expert_tensors(prefix, projs))
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    alpha = lora.alpha if lora.alpha is not None else lora.rank
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": lora.rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted(targets),
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_rslora": False,
        "modules_to_save": None,
    }
    if experts:  # gate and up as one adapter of rank 2r, alpha 2 alpha: the same scale
        config["target_parameters"] = list(EXPERT_PARAMETERS)
        config["rank_pattern"] = {"gate_up_proj": 2 * lora.rank}
        config["alpha_pattern"] = {"gate_up_proj": 2 * alpha}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out
