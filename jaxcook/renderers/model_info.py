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
