"""Kimi K2 Instruct (`moonshotai/Kimi-K2-Instruct`, `-Instruct-0905`): K2's format without reasoning.

    <|im_system|>system<|im_middle|>{s}<|im_end|><|im_user|>user<|im_middle|>{u}<|im_end|>
    <|im_assistant|>assistant<|im_middle|>{a}<|im_end|>

Its chat template (the same text for both checkpoints, whitespace aside) writes assistant turns
as they are, history included: no `<think>` block, so prompts extend each other (extension
property) and a message with thinking is an error, as the model never writes any. Tool
declarations, calls and results are written as by `kimi_k2`. One quirk of the template is kept:
the default system prompt it inserts (when the conversation has no system message) is followed
by a newline, which a system message of the conversation is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from jaxcook.renderers.base import (
    Message,
    RenderContext,
    RenderedMessage,
    RendererError,
    check_roles,
    has_thinking,
)
from jaxcook.renderers.kimi_k2 import KIMI_DEFAULT_SYSTEM_PROMPT, KimiK2Renderer


class KimiK2InstructRenderer(KimiK2Renderer):
    name = "kimi_k2_instruct"
    has_extension_property = True
    thinking = False

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        # the inserted default system message, recognised by identity when rendered
        self._default_system: Message = {"role": "system", "content": KIMI_DEFAULT_SYSTEM_PROMPT}

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, messages, self.roles)
        for i, m in enumerate(messages):
            if has_thinking(m):
                raise RendererError(f"{self.name}: message {i} has thinking, which this model never writes")
        prepared = super().prepare(messages)
        start = 1 if messages and messages[0]["role"] == "tool_declare" else 0
        if len(prepared) > len(messages):  # the parent inserted the default system message at `start`
            prepared[start] = self._default_system
        return prepared

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        rendered = super().render_message(message, ctx)
        if message is self._default_system:
            return replace(rendered, output=rendered.output + self.encode("\n"))
        return rendered
