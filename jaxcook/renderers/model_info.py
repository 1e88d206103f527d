"""Which renderer each model was trained with: model name -> recommended renderer names.

The first name is the default. Names match case-insensitively, on the full hub id or its last
path component (so a local folder named like the model works too).
"""

from __future__ import annotations

import warnings

# Dict literal, one line per model; first renderer = default.
MODEL_RENDERERS: dict[str, tuple[str, ...]] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("chatml",),
    "HuggingFaceTB/SmolLM2-360M-Instruct": ("chatml",),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": ("chatml",),
    "smollm2-135m-instruct": ("chatml",),
    "Qwen/Qwen2.5-0.5B-Instruct": ("qwen2_5",),
    "Qwen/Qwen2.5-1.5B-Instruct": ("qwen2_5",),
    "Qwen/Qwen2.5-7B-Instruct": ("qwen2_5",),
    "Qwen/Qwen3-0.6B": ("qwen3", "qwen3_disable_thinking"),
    "Qwen/Qwen3-8B": ("qwen3", "qwen3_disable_thinking"),
    "Qwen/Qwen3-32B": ("qwen3", "qwen3_disable_thinking"),
    "Qwen/Qwen3-30B-A3B": ("qwen3", "qwen3_disable_thinking"),
    "Qwen/Qwen3-4B-Instruct-2507": ("qwen3_instruct",),
    "Qwen/Qwen3-30B-A3B-Instruct-2507": ("qwen3_instruct",),
    "Qwen/Qwen3-8B-Base": ("role_colon",),
    "Qwen/Qwen3-30B-A3B-Base": ("role_colon",),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama3",),
    "meta-llama/Llama-3.3-70B-Instruct": ("llama3",),
    "meta-llama/Llama-3.2-1B-Instruct": ("llama3",),
    "meta-llama/Llama-3.2-3B-Instruct": ("llama3",),
    "meta-llama/Llama-3.1-8B": ("role_colon",),
    "meta-llama/Llama-3.2-1B": ("role_colon",),
    "deepseek-ai/DeepSeek-V3.1": ("deepseekv3", "deepseekv3_thinking"),
    "deepseek-ai/DeepSeek-V3.1-Base": ("role_colon",),
    "openai/gpt-oss-20b": (
        "gpt_oss_no_sysprompt",
        "gpt_oss_medium_reasoning",
        "gpt_oss_low_reasoning",
        "gpt_oss_high_reasoning",
    ),
    "openai/gpt-oss-120b": (
        "gpt_oss_no_sysprompt",
        "gpt_oss_medium_reasoning",
        "gpt_oss_low_reasoning",
        "gpt_oss_high_reasoning",
    ),
    "moonshotai/Kimi-K2-Thinking": ("kimi_k2",),
    "moonshotai/Kimi-K2-Instruct": ("kimi_k2_instruct",),
    "moonshotai/Kimi-K2-Instruct-0905": ("kimi_k2_instruct",),
}


def _lookup() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for name, renderers in MODEL_RENDERERS.items():
        table.setdefault(name.lower(), renderers)
        table.setdefault(name.rsplit("/", 1)[-1].lower(), renderers)
    return table


def _key(model_name: str) -> str:
    return model_name.rstrip("/").rsplit("/", 1)[-1].lower()


def get_recommended_renderer_names(model_name: str) -> tuple[str, ...]:
    table = _lookup()
    found = table.get(model_name.lower()) or table.get(_key(model_name))
    if found is None:
        raise KeyError(
            f"no renderer is known for model {model_name!r}; pass a renderer name explicitly "
            f"(known models: {sorted(MODEL_RENDERERS)})"
        )
    return found


def get_recommended_renderer_name(model_name: str) -> str:
    return get_recommended_renderer_names(model_name)[0]


def warn_if_renderer_not_recommended(model_name: str, renderer_name: str) -> bool:
    """Warn (and return True) when `renderer_name` is not one the model was trained with."""
    try:
        recommended = get_recommended_renderer_names(model_name)
    except KeyError:
        return False
    if renderer_name in recommended:
        return False
    warnings.warn(
        f"renderer {renderer_name!r} is not recommended for {model_name!r} (recommended: "
        f"{list(recommended)}); training in a format the model was not tuned on degrades it silently",
        stacklevel=2,
    )
    return True
