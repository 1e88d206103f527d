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
from jaxcook.renderers.deepseek_v3 import DeepSeekV3Renderer
from jaxcook.renderers.gpt_oss import GptOssRenderer
from jaxcook.renderers.kimi_k2 import KimiK2Renderer
from jaxcook.renderers.kimi_k2_instruct import KimiK2InstructRenderer
from jaxcook.renderers.llama3 import Llama3Renderer
from jaxcook.renderers.qwen3 import QWEN2_5_DEFAULT_SYSTEM_PROMPT, Qwen2_5Renderer, Qwen3Renderer
from jaxcook.renderers.role_colon import RoleColonRenderer

RENDERERS: dict[str, Callable[..., Renderer]] = {
    "role_colon": RoleColonRenderer,
    "llama3": Llama3Renderer,
    "chatml": lambda tok: ChatMLRenderer(
        tok, name="chatml", default_system_prompt=SMOLLM2_DEFAULT_SYSTEM_PROMPT
    ),
    "chatml_no_default_system": lambda tok: ChatMLRenderer(tok, name="chatml_no_default_system"),
    "qwen2_5": lambda tok: Qwen2_5Renderer(
        tok, name="qwen2_5", thinking=False, default_system_prompt=QWEN2_5_DEFAULT_SYSTEM_PROMPT
    ),
    "deepseekv3": lambda tok: DeepSeekV3Renderer(tok, name="deepseekv3"),
    "deepseekv3_thinking": lambda tok: DeepSeekV3Renderer(tok, name="deepseekv3_thinking", thinking=True),
    "gpt_oss_no_sysprompt": lambda tok: GptOssRenderer(
        tok, name="gpt_oss_no_sysprompt", reasoning_effort=None
    ),
    "gpt_oss_low_reasoning": lambda tok: GptOssRenderer(
        tok, name="gpt_oss_low_reasoning", reasoning_effort="low"
    ),
    "gpt_oss_medium_reasoning": lambda tok: GptOssRenderer(
        tok, name="gpt_oss_medium_reasoning", reasoning_effort="medium"
    ),
    "gpt_oss_high_reasoning": lambda tok: GptOssRenderer(
        tok, name="gpt_oss_high_reasoning", reasoning_effort="high"
    ),
    "kimi_k2": KimiK2Renderer,
    "kimi_k2_instruct": KimiK2InstructRenderer,
    "qwen3": lambda tok: Qwen3Renderer(tok, name="qwen3"),
    "qwen3_disable_thinking": lambda tok: Qwen3Renderer(
        tok, name="qwen3_disable_thinking", disable_thinking=True
    ),
    "qwen3_instruct": lambda tok: Qwen3Renderer(tok, name="qwen3_instruct", thinking=False),
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
