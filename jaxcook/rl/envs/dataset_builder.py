"""Shared fields of the env dataset builders: which model's renderer, group and batch sizes, seed.

A builder is a frozen config; calling it builds `(train, test)` datasets. The renderer comes from
`renderer` when one is given (tests, notebooks), else from `renderer_name` (default: the model's
recommended renderer) applied to the tokenizer of `model_name`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jaxcook.rl.types import RLDatasetBuilder

if TYPE_CHECKING:
    from jaxcook.renderers import Renderer

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def load_tokenizer(model_name: str):
    """The tokenizer of `model_name`: SmolLM2 from the offline assets, others from the HF hub/cache."""
    if "smollm2" in model_name.lower():
        from jaxcook.renderers.tokenizers import offline_tokenizer

        return offline_tokenizer("smollm2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_name)


def load_renderer(model_name: str, renderer_name: str | None = None) -> Renderer:
    from jaxcook.renderers import get_renderer
    from jaxcook.renderers.model_info import get_recommended_renderer_name

    name = renderer_name or get_recommended_renderer_name(model_name)
    return get_renderer(name, load_tokenizer(model_name))


@dataclass(frozen=True, kw_only=True)
class EnvDatasetBuilder(RLDatasetBuilder):
    model_name: str = DEFAULT_MODEL
    renderer_name: str | None = None
    groups_per_batch: int = 32
    group_size: int = 8
    seed: int = 0
    renderer: Any = field(default=None, repr=False, compare=False)  # a Renderer; wins when given

    def __post_init__(self):
        for name in ("groups_per_batch", "group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}")

    def get_renderer(self) -> Renderer:
        return (
            self.renderer if self.renderer is not None else load_renderer(self.model_name, self.renderer_name)
        )
