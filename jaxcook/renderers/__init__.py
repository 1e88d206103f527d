"""Chat renderers: the registry of renderer names and the public interface (see `base.py`)."""

from __future__ import annotations

from collections.abc import Callable

from jaxcook.renderers.base import (
    ContentPart,
    FunctionBody,
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    RendererError,
    TextPart,
    ThinkingPart,
    ToolCall,
    ToolSpec,
    TrainOnWhat,
    UnparsedToolCall,
    get_text_content,
)
from jaxcook.renderers.chatml import SMOLLM2_DEFAULT_SYSTEM_PROMPT, ChatMLRenderer

RENDERERS: dict[str, Callable[..., Renderer]] = {
    "chatml": lambda tok: ChatMLRenderer(
        tok, name="chatml", default_system_prompt=SMOLLM2_DEFAULT_SYSTEM_PROMPT
    ),
    "chatml_no_default_system": lambda tok: ChatMLRenderer(tok, name="chatml_no_default_system"),
}


def get_renderer(name: str, tokenizer) -> Renderer:
    """The renderer registered as `name`, bound to `tokenizer`."""
    if name not in RENDERERS:
        raise RendererError(f"unknown renderer {name!r}; valid names: {sorted(RENDERERS)}")
    return RENDERERS[name](tokenizer)


__all__ = [
    "RENDERERS",
    "ContentPart",
    "FunctionBody",
    "Message",
    "ParseTermination",
    "RenderContext",
    "RenderedMessage",
    "Renderer",
    "RendererError",
    "TextPart",
    "ThinkingPart",
    "ToolCall",
    "ToolSpec",
    "TrainOnWhat",
    "UnparsedToolCall",
    "get_renderer",
    "get_text_content",
]
